//! The GitHub fake itself: octocrab reads its answers into typed models, git clones and
//! pushes through it.

mod support;

#[path = "support/self_test.rs"]
mod self_test;
