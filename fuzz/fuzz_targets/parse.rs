//! Arbitrary UTF-8 as a model reply: parse and apply it to a small worktree (`../invariant.rs`).
//! It must not panic, a refused reply must leave every file untouched, and an applied one
//! must change exactly the files it reports. Run it with `.ci/fuzz`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../invariant.rs"]
mod invariant;

use std::cell::RefCell;

thread_local! {
    static FIXTURE: RefCell<Option<invariant::Fixture>> = const { RefCell::new(None) };
}

fuzz_target!(|reply: &str| {
    // Dry runs take the same path up to the write, so half the inputs exercise them.
    let dry_run = reply.len() % 2 == 1;
    FIXTURE.with_borrow_mut(|f| {
        let fixture = f.get_or_insert_with(|| invariant::Fixture::new().expect("fixture"));
        if let Err(broken) = fixture.check(reply, dry_run) {
            panic!("invariant broken: {broken}\nreply: {reply:?}");
        }
    });
});
