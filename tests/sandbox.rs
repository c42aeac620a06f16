//! Sandbox tests against the real Docker Engine. They FAIL (not skip) when Docker is
//! unreachable. One default image is built once (`ensure_default_image`, file-locked across
//! processes); cheap cases share one container, the destructive ones get their own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use agent_runner::sandbox::{self, Limits, Sandbox, SandboxSpec};
use tokio::sync::OnceCell;

const RUNNER: &str = "agent-runner-sandbox-tests";

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Runs an async test body on the shared runtime and prints its wall time.
fn run<F: std::future::Future<Output = ()>>(name: &str, f: F) {
    let started = Instant::now();
    let _cleanup = RemoveSharedAfterTest;
    rt().block_on(f);
    eprintln!("TIMING {name}: {:.2}s", started.elapsed().as_secs_f64());
}

/// nextest runs each test in a process of its own, so the shared container serves one test
/// and goes with it, panic or not. Under `cargo test` it outlives the process and the next
/// run's `remove_leftovers` removes it.
struct RemoveSharedAfterTest;

impl Drop for RemoveSharedAfterTest {
    fn drop(&mut self) {
        if std::env::var_os("NEXTEST_RUN_ID").is_none() {
            return;
        }
        if let (Some(shared), Some(env)) = (SHARED.get(), ENV.get()) {
            let id = shared.sandbox.container_id().to_string();
            rt().block_on(async {
                let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build();
                let _ = env.docker.remove_container(&id, Some(options)).await;
            });
        }
    }
}

struct Env {
    docker: bollard::Docker,
    image: String,
}

/// Docker + the default image, once per test process.
static ENV: OnceCell<Env> = OnceCell::const_new();

async fn env() -> &'static Env {
    ENV.get_or_init(|| async {
        // A secret in the runner's environment must never reach the sandbox.
        // SAFETY: set once, before any sandbox exists; nothing else writes the environment.
        unsafe { std::env::set_var("GITHUB_TOKEN", "ghp_fake_token_must_not_leak") };
        let docker = sandbox::connect()
            .await
            .unwrap_or_else(|e| panic!("the sandbox tests need a running Docker Engine: {e}"));
        remove_leftovers(&docker).await;
        let started = Instant::now();
        let image = sandbox::ensure_default_image(&docker, &mut |l: &str| eprintln!("image: {l}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "TIMING ensure_default_image: {:.2}s",
            started.elapsed().as_secs_f64()
        );
        Env { docker, image }
    })
    .await
}

/// Removes containers left by earlier test processes that died (every runner id of these
/// tests starts with `RUNNER`); those of test processes running now are left alone. A
/// runner id ending in `-<pid>` belongs to that test process alone (its fakes may claim
/// dead owners on purpose): all of it goes once that process is gone.
async fn remove_leftovers(docker: &bollard::Docker) {
    use bollard::query_parameters::ListContainersOptionsBuilder;
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![sandbox::LABEL_RUNNER_ID.to_string()],
    )]);
    let list = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    let mut runners: Vec<String> = list
        .iter()
        .filter_map(|c| c.labels.as_ref()?.get(sandbox::LABEL_RUNNER_ID).cloned())
        .filter(|r| r.starts_with(RUNNER))
        .collect();
    runners.sort();
    runners.dedup();
    for runner in runners {
        let test_pid = runner
            .rsplit('-')
            .next()
            .filter(|_| runner != RUNNER)
            .and_then(|p| p.parse::<u32>().ok());
        let n = match test_pid {
            Some(pid) if Path::new(&format!("/proc/{pid}")).exists() => 0,
            Some(_) => sandbox::remove_stale(docker, &runner, &[]).await.unwrap(),
            None => sandbox::remove_orphans(docker, &runner).await.unwrap(),
        };
        if n > 0 {
            eprintln!("removed {n} containers of earlier test runs");
        }
    }
}

fn spec(task: &str, limits: Limits) -> SandboxSpec {
    SandboxSpec {
        image: None,
        limits,
        network: false,
        runtime: None,
        runner_id: RUNNER.to_string(),
        task_id: format!("p{}-{task}", std::process::id()),
    }
}

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// A host file the sandbox must never see.
fn host_secret_path() -> PathBuf {
    std::env::temp_dir().join(format!("agent-runner-host-secret-{}", std::process::id()))
}

struct Shared {
    sandbox: Sandbox,
    worktree: tempfile::TempDir,
}

/// One container for the cheap cases (see `RemoveSharedAfterTest` for when it goes).
static SHARED: OnceCell<Shared> = OnceCell::const_new();

async fn shared() -> &'static Shared {
    SHARED
        .get_or_init(|| async {
            let env = env().await;
            let wt = tempfile::tempdir().unwrap();
            let root = wt.path();
            write(
                root,
                ".git/config",
                "[remote] url = https://token@example.invalid/",
            );
            write(root, ".git/HEAD", "ref: refs/heads/main\n");
            write(root, "sub/.git", "gitdir: ../.git/modules/sub\n");
            write(
                root,
                "tests/test_ok.py",
                "def test_ok():\n    assert 1 + 1 == 2\n",
            );
            write(root, "run.sh", "#!/bin/sh\necho script ran\n");
            std::fs::set_permissions(
                root.join("run.sh"),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
            std::fs::write(host_secret_path(), "HOST-SECRET-CONTENT\n").unwrap();
            std::os::unix::fs::symlink(host_secret_path(), root.join("secret-link")).unwrap();
            std::os::unix::fs::symlink("/etc/hostname", root.join("hostname-link")).unwrap();
            std::os::unix::fs::symlink("tests/test_ok.py", root.join("relative-link")).unwrap();
            write(root, "sync/modified.txt", "old\n");
            write(root, "sync/deleted.txt", "delete me\n");
            write(root, "sync/dir/kept.txt", "kept\n");
            let started = Instant::now();
            let sandbox = Sandbox::start(&env.docker, &spec("shared", Limits::default()), root)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            eprintln!(
                "TIMING shared Sandbox::start: {:.2}s",
                started.elapsed().as_secs_f64()
            );
            Shared {
                sandbox,
                worktree: wt,
            }
        })
        .await
}

async fn sh(sb: &Sandbox, cmd: &str) -> sandbox::ExecOutcome {
    sb.exec_with_timeout(cmd, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("exec {cmd:?}: {e}"))
}

#[test]
fn exit_codes_and_interleaved_output() {
    run("exit_codes_and_interleaved_output", async {
        let s = shared().await;
        let o = sh(&s.sandbox, "echo out1; echo err1 >&2; echo out2; exit 3").await;
        assert_eq!(o.exit_code, Some(3));
        assert_eq!(o.output, "out1\nerr1\nout2\n");
        assert!(!o.passed() && !o.timed_out && !o.oom_killed);
        assert!(o.summary().starts_with("exit 3 in "), "{}", o.summary());
        let o = sh(
            &s.sandbox,
            "./run.sh && python3 -m pytest -q tests 2>&1 | tail -1",
        )
        .await;
        assert!(o.passed(), "{}: {}", o.summary(), o.output);
        assert!(
            o.output.contains("script ran") && o.output.contains("1 passed"),
            "{}",
            o.output
        );
        let o = sh(&s.sandbox, "exit 0").await;
        assert!(o.passed());
        assert_eq!(o.summary().split(" in ").next(), Some("exit 0"));
    });
}

#[test]
fn read_only_commands_read_the_tree_but_cannot_change_it() {
    run(
        "read_only_commands_read_the_tree_but_cannot_change_it",
        async {
            let s = shared().await;
            let o = s
            .sandbox
            .exec_read_only(
                "cat tests/test_ok.py; id -u; touch new.txt; echo more >> run.sh; rm tests/test_ok.py; mkdir d; echo scratch > /tmp/ok && echo tmp-writable",
            )
            .await
            .unwrap();
            assert!(o.output.contains("def test_ok():"), "{}", o.output);
            assert!(o.output.contains("\n10002\n"), "{}", o.output);
            assert_eq!(
                o.output.matches("Permission denied").count(),
                4,
                "{}",
                o.output
            );
            assert!(o.output.contains("tmp-writable"), "{}", o.output);
            let after = sh(
                &s.sandbox,
                "test ! -e new.txt && test ! -e d && test -e tests/test_ok.py && cat run.sh",
            )
            .await;
            assert_eq!(after.output, "#!/bin/sh\necho script ran\n", "unchanged");
        },
    );
}

#[test]
fn prune_removes_images_of_other_recipes_and_keeps_the_current_one() {
    run(
        "prune_removes_images_of_other_recipes_and_keeps_the_current_one",
        async {
            let env = env().await;
            let current = sandbox::default_image_tag();
            let old = format!("agent-runner-sandbox:prunetest{}", std::process::id());
            let options = bollard::query_parameters::TagImageOptionsBuilder::default()
                .repo("agent-runner-sandbox")
                .tag(old.split(':').nth(1).unwrap())
                .build();
            env.docker.tag_image(&current, Some(options)).await.unwrap();
            let pruned = sandbox::prune_images(&env.docker).await.unwrap();
            assert!(pruned.removed.iter().any(|(t, _)| *t == old), "{pruned:?}");
            assert!(
                env.docker.inspect_image(&old).await.is_err(),
                "{old} is gone"
            );
            assert!(
                env.docker.inspect_image(&current).await.is_ok(),
                "{current} stays"
            );
            assert!(
                env.docker
                    .inspect_image(&sandbox::base_image_tag())
                    .await
                    .is_ok(),
                "the current base stays"
            );
        },
    );
}

#[test]
fn read_only_commands_are_killed_at_the_command_timeout() {
    run(
        "read_only_commands_are_killed_at_the_command_timeout",
        async {
            let env = env().await;
            let wt = tempfile::tempdir().unwrap();
            write(wt.path(), "a.txt", "a\n");
            let limits = Limits {
                command_timeout: Duration::from_secs(2),
                ..Limits::default()
            };
            let sandbox = Sandbox::start(&env.docker, &spec("ro-timeout", limits), wt.path())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let o = sandbox
                .exec_read_only("sleep 60 & sleep 60; echo never")
                .await
                .unwrap();
            assert!(o.timed_out, "{}: {}", o.summary(), o.output);
            assert!(o.duration < Duration::from_secs(10), "{:?}", o.duration);
            assert!(!o.output.contains("never"));
            // Nothing of it is left, and the sandbox still works.
            let ps = sandbox
                .exec("ps -eo uid= | grep -c 10002 || true")
                .await
                .unwrap();
            assert_eq!(ps.output.trim(), "0", "{}", ps.output);
            sandbox.remove().await.unwrap();
        },
    );
}

#[test]
fn worktree_copy_skips_git_and_keeps_owner_and_modes() {
    run("worktree_copy_skips_git_and_keeps_owner_and_modes", async {
        let s = shared().await;
        let o = sh(
            &s.sandbox,
            "test ! -e .git && test ! -e sub/.git && echo nogit; \
             stat -c '%u:%g %a %n' run.sh tests tests/test_ok.py; pwd",
        )
        .await;
        assert!(o.passed(), "{}", o.output);
        assert_eq!(
            o.output,
            "nogit\n10001:10001 755 run.sh\n10001:10001 755 tests\n10001:10001 644 tests/test_ok.py\n/workspace\n"
        );
    });
}

#[test]
fn symlinks_are_copied_as_symlinks_and_never_leak_host_files() {
    run(
        "symlinks_are_copied_as_symlinks_and_never_leak_host_files",
        async {
            let s = shared().await;
            let secret = host_secret_path();
            let o = sh(
            &s.sandbox,
            &format!(
                "readlink secret-link hostname-link relative-link; \
                 cat secret-link 2>&1; cat hostname-link; cat /etc/hostname; head -1 relative-link; \
                 test -L secret-link && echo is-link; ls {} 2>&1",
                secret.display()
            ),
        )
        .await;
            let lines: Vec<&str> = o.output.lines().collect();
            assert_eq!(lines[0], secret.display().to_string());
            assert_eq!(lines[1], "/etc/hostname");
            assert_eq!(lines[2], "tests/test_ok.py");
            assert!(lines[3].contains("No such file"), "{}", o.output);
            // hostname-link shows the container's own /etc/hostname, not the host's.
            assert_eq!(lines[4], lines[5]);
            let host_hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            assert!(
                host_hostname.trim().is_empty() || lines[4] != host_hostname.trim(),
                "{}",
                o.output
            );
            assert_eq!(lines[6], "def test_ok():");
            assert!(o.output.contains("is-link"));
            assert!(!o.output.contains("HOST-SECRET-CONTENT"), "{}", o.output);
        },
    );
}

#[test]
fn sync_uploads_modified_and_new_files_and_deletes_gone_ones() {
    run(
        "sync_uploads_modified_and_new_files_and_deletes_gone_ones",
        async {
            let s = shared().await;
            let root = s.worktree.path();
            write(root, "sync/modified.txt", "new content\n");
            write(root, "sync/new/deep/file.txt", "brand new\n");
            std::fs::remove_file(root.join("sync/deleted.txt")).unwrap();
            std::os::unix::fs::symlink("/etc", root.join("sync/etc-link")).unwrap();
            let changed: Vec<PathBuf> = [
                "sync/modified.txt",
                "sync/new/deep/file.txt",
                "sync/deleted.txt",
                // Below a symlink: the symlink itself is synced, the host's /etc is not read.
                "sync/etc-link/shadow",
                ".git/config",
            ]
            .iter()
            .map(PathBuf::from)
            .collect();
            s.sandbox
                .sync(root, &changed)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let o = sh(
                &s.sandbox,
                "cat sync/modified.txt sync/new/deep/file.txt sync/dir/kept.txt; \
             test -e sync/deleted.txt || echo deleted; readlink sync/etc-link; \
             stat -c '%u' sync/new sync/new/deep; test ! -e .git && echo nogit; \
             touch sync/new/deep/writable && echo writable",
            )
            .await;
            assert_eq!(
                o.output,
                "new content\nbrand new\nkept\ndeleted\n/etc\n10001\n10001\nnogit\nwritable\n"
            );
            // The mtime arrives to the nanosecond, so `make` never takes an edited source
            // for older than what it built in the same second.
            let status = std::process::Command::new("touch")
                .args(["-d", "2026-01-02 03:04:05.123456789"])
                .arg(root.join("sync/modified.txt"))
                .status()
                .unwrap();
            assert!(status.success());
            s.sandbox
                .sync(root, &[PathBuf::from("sync/modified.txt")])
                .await
                .unwrap();
            let host = std::fs::metadata(root.join("sync/modified.txt")).unwrap();
            let o = sh(&s.sandbox, "stat -c '%.9Y' sync/modified.txt").await;
            assert_eq!(
                o.output.trim(),
                format!("{}.123456789", std::os::unix::fs::MetadataExt::mtime(&host)),
            );
            assert!(
                s.sandbox
                    .sync(root, &[PathBuf::from("../outside")])
                    .await
                    .is_err()
            );
        },
    );
}

#[test]
fn timeout_kills_the_whole_process_tree() {
    run("timeout_kills_the_whole_process_tree", async {
        let s = shared().await;
        let started = Instant::now();
        let o = s
            .sandbox
            .exec_with_timeout("sleep 1000 & sleep 1000; wait", Duration::from_secs(2))
            .await
            .unwrap();
        let took = started.elapsed();
        assert!(o.timed_out, "{o:?}");
        assert!(!o.passed());
        assert!(!o.container_killed);
        assert!(took < Duration::from_secs(4), "took {took:?}");
        assert_eq!(o.summary(), "timed out after 2s (process tree killed)");
        let ps = sh(&s.sandbox, "ps -eo user,args").await;
        assert!(!ps.output.contains("sleep 1000"), "{}", ps.output);
    });
}

#[test]
fn output_flood_is_capped_while_reading() {
    run("output_flood_is_capped_while_reading", async {
        let s = shared().await;
        let o = sh(
            &s.sandbox,
            "echo first; yes | head -c 500000000; echo; echo last",
        )
        .await;
        assert!(o.passed(), "{}", o.summary());
        assert!(o.output.len() <= 1024 * 1024 + 200, "{}", o.output.len());
        assert!(o.output.starts_with("first\ny\ny\n"));
        assert!(o.output.ends_with("y\ny\n\nlast\n"));
        assert!(o.output.contains("bytes of output cut here]"));
        let total = 6 + 500_000_000 + 1 + 5;
        assert_eq!(o.truncated_bytes, total - 1024 * 1024);
        assert!(
            o.summary()
                .contains(&format!("(output cut: {} bytes)", o.truncated_bytes))
        );
    });
}

#[test]
fn network_is_absent() {
    run("network_is_absent", async {
        let s = shared().await;
        // Make sure there is nothing but loopback before any connection attempt.
        let o = sh(&s.sandbox, "ls /sys/class/net").await;
        assert_eq!(
            o.output, "lo\n",
            "unexpected interfaces: refusing to try a connection"
        );
        let py = "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=3)\n    print('CONNECTED')\nexcept OSError as e:\n    print('blocked', e)\n";
        let o = sh(
            &s.sandbox,
            &format!("python3 -c \"{py}\"; curl -sS --max-time 3 http://1.1.1.1/ ; echo curl=$?"),
        )
        .await;
        assert!(o.output.contains("blocked"), "{}", o.output);
        assert!(!o.output.contains("CONNECTED"));
        assert!(!o.output.contains("curl=0"), "{}", o.output);
    });
}

#[test]
fn environment_has_nothing_from_the_host() {
    run("environment_has_nothing_from_the_host", async {
        let s = shared().await;
        assert!(std::env::var("GITHUB_TOKEN").is_ok());
        let o = sh(&s.sandbox, "env | cut -d= -f1 | sort").await;
        assert!(!o.output.contains("GITHUB_TOKEN"));
        let allowed = [
            "HOME", "HOSTNAME", "LANG", "OLDPWD", "PATH", "PWD", "SHLVL", "_",
        ];
        for var in o.output.lines() {
            assert!(
                allowed.contains(&var),
                "unexpected variable {var} in:\n{}",
                o.output
            );
        }
        let o = sh(&s.sandbox, "echo $HOME").await;
        assert_eq!(o.output, "/tmp\n");
    });
}

#[test]
fn root_filesystem_is_read_only_and_privileges_are_dropped() {
    run(
        "root_filesystem_is_read_only_and_privileges_are_dropped",
        async {
            let s = shared().await;
            let o = sh(
            &s.sandbox,
            "for f in /x /usr/x /etc/passwd; do (echo x >> $f) 2>/dev/null && echo wrote-$f; done; \
             touch /workspace/w /tmp/t && echo ok-writable; id -u; \
             grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; \
             df -P /workspace /tmp | tail -2 | awk '{print $2}'",
        )
        .await;
            let lines: Vec<&str> = o.output.lines().collect();
            assert!(!o.output.contains("wrote-"), "{}", o.output);
            assert_eq!(lines[0], "ok-writable");
            assert_eq!(lines[1], "10001");
            assert_eq!(lines[2], "CapEff:\t0000000000000000");
            assert_eq!(lines[3], "CapBnd:\t0000000000000000");
            assert_eq!(lines[4], "NoNewPrivs:\t1");
            assert_eq!(lines[5], (1024 * 1024).to_string(), "workspace is 1g");
            assert_eq!(lines[6], (512 * 1024).to_string(), "tmp is 512m");
        },
    );
}

#[test]
fn memory_hog_is_oom_killed() {
    run("memory_hog_is_oom_killed", async {
        let env = env().await;
        let wt = tempfile::tempdir().unwrap();
        let limits = Limits {
            memory_bytes: 256 * 1024 * 1024,
            ..Limits::default()
        };
        let sb = Sandbox::start(&env.docker, &spec("oom", limits), wt.path())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let o = sh(&sb, "python3 -c \"x = b'a' * (4 << 30); print(len(x))\"").await;
        // The OOM victim is a child: the shell goes on and exits 3.
        let child = sh(
            &sb,
            "python3 -c \"x = b'a' * (4 << 30)\"; echo shell-continues; exit 3",
        )
        .await;
        let fine = sh(&sb, "echo still-alive").await;
        sb.remove().await.unwrap();
        assert!(child.oom_killed, "{child:?}");
        assert_eq!(child.exit_code, Some(3));
        assert!(child.output.contains("shell-continues"));
        assert!(
            child
                .summary()
                .ends_with("a process was killed: out of memory"),
            "{}",
            child.summary()
        );
        assert!(o.oom_killed, "{o:?}");
        assert!(!o.timed_out);
        assert_eq!(o.exit_code, Some(137));
        assert!(
            o.summary().starts_with("killed: out of memory"),
            "{}",
            o.summary()
        );
        assert_eq!(fine.output, "still-alive\n");
        assert!(!fine.oom_killed);
    });
}

#[test]
fn runaway_processes_are_contained() {
    run("runaway_processes_are_contained", async {
        let env = env().await;
        let wt = tempfile::tempdir().unwrap();
        let sb = Sandbox::start(&env.docker, &spec("runaway", Limits::default()), wt.path())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Fork bomb whose processes keep forking while the top process waits: bounded by the
        // pids limit, ended by the timeout.
        let started = Instant::now();
        let bomb = sb
            .exec_with_timeout(
                "b() { b & b; }; b & exec sleep 1000",
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        let bomb_took = started.elapsed();
        let after = sh(&sb, "echo alive; ps -e --no-headers | wc -l").await;
        // A daemonised child escapes the process group (and keeps the output open; Docker
        // closes it 2 s after the exec's main process ends): after the timeout every process
        // of the sandbox user is killed.
        let started = Instant::now();
        let escaped = sb
            .exec_with_timeout("setsid sleep 1000 & sleep 1000", Duration::from_secs(1))
            .await
            .unwrap();
        let escaped_took = started.elapsed();
        let ps = sh(&sb, "ps -eo user,args").await;
        sb.remove().await.unwrap();
        eprintln!(
            "bomb: {} took {bomb_took:?}; escaped: {} took {escaped_took:?}; after: {}",
            bomb.summary(),
            escaped.summary(),
            after.output
        );
        assert!(bomb.timed_out, "{}", bomb.summary());
        assert!(
            bomb.output.contains("Cannot fork"),
            "pids limit not reached?"
        );
        assert!(bomb_took < Duration::from_secs(12), "{bomb_took:?}");
        assert!(after.output.starts_with("alive\n"), "{}", after.output);
        // docker-init, sleep infinity, wrapper sh, timeout, sh, ps, wc
        let procs: usize = after.output.lines().nth(1).unwrap().trim().parse().unwrap();
        assert!(procs <= 7, "{}", after.output);
        assert!(
            escaped.timed_out && !escaped.container_killed,
            "{escaped:?}"
        );
        assert!(escaped_took < Duration::from_secs(10), "{escaped_took:?}");
        assert!(!ps.output.contains("sleep 1000"), "{}", ps.output);
        assert!(ps.output.contains("sleep infinity"), "{}", ps.output);
    });
}

#[test]
fn remove_stale_removes_dead_tasks_only() {
    run("remove_stale_removes_dead_tasks_only", async {
        let env = env().await;
        let runner = format!("{RUNNER}-stale-{}", std::process::id());
        let wt = tempfile::tempdir().unwrap();
        let mk = |task: &str| SandboxSpec {
            image: Some(env.image.clone()),
            runner_id: runner.clone(),
            task_id: task.to_string(),
            ..SandboxSpec::default()
        };
        let dead = Sandbox::start(&env.docker, &mk("dead"), wt.path())
            .await
            .unwrap();
        let live = Sandbox::start(&env.docker, &mk("live"), wt.path())
            .await
            .unwrap();
        let dead_id = dead.container_id().to_string();
        std::mem::forget(dead); // as if the runner had crashed
        let n = sandbox::remove_stale(&env.docker, &runner, &["live".to_string()])
            .await
            .unwrap();
        assert_eq!(n, 1);
        assert!(env.docker.inspect_container(&dead_id, None).await.is_err());
        assert!(
            env.docker
                .inspect_container(live.container_id(), None)
                .await
                .is_ok()
        );
        live.remove().await.unwrap();
        assert_eq!(
            sandbox::remove_stale(&env.docker, &runner, &[])
                .await
                .unwrap(),
            0
        );
    });
}

async fn container_exists(docker: &bollard::Docker, id: &str) -> bool {
    match docker.inspect_container(id, None).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => false,
        Err(e) => panic!("inspect {id}: {e}"),
    }
}

/// Waits until the container is gone (background removals take a moment); false if it is
/// still there after `limit`.
async fn gone_within(docker: &bollard::Docker, id: &str, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if !container_exists(docker, id).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The containers of this test process for `task`.
async fn own_containers(docker: &bollard::Docker, task: &str) -> Vec<String> {
    use bollard::query_parameters::ListContainersOptionsBuilder;
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!("{}={task}", sandbox::LABEL_TASK_ID)],
    )]);
    docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

#[test]
fn dropped_or_cancelled_sandboxes_are_removed() {
    run("dropped_or_cancelled_sandboxes_are_removed", async {
        let env = env().await;
        let wt = tempfile::tempdir().unwrap();
        // Dropped without remove().
        let sb = Sandbox::start(&env.docker, &spec("dropped", Limits::default()), wt.path())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let dropped = sb.container_id().to_string();
        drop(sb);
        // A future cancelled while its command runs (a caller's timeout, a shutdown).
        let cancelled = spec("cancelled", Limits::default());
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let work = async {
            let sb = Sandbox::start(&env.docker, &cancelled, wt.path())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            started_tx.send(sb.container_id().to_string()).unwrap();
            sb.exec("sleep 100").await.unwrap();
        };
        let running = async {
            let id = started_rx.await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            id
        };
        let cancelled_id = tokio::select! {
            () = work => panic!("the sleep outlived the cancellation"),
            id = running => id,
        };
        assert!(gone_within(&env.docker, &dropped, Duration::from_secs(10)).await);
        assert!(gone_within(&env.docker, &cancelled_id, Duration::from_secs(10)).await);
        assert!(
            own_containers(&env.docker, &cancelled.task_id)
                .await
                .is_empty()
        );
    });
}

#[test]
fn supervise_removes_the_container_on_every_way_out() {
    run("supervise_removes_the_container_on_every_way_out", async {
        let env = env().await;
        let wt = tempfile::tempdir().unwrap();
        let rules = |wall: u64| sandbox::Supervision {
            wall_clock: Some(Duration::from_secs(wall)),
            stop_on_signals: false,
        };

        // Wall clock: the work is stopped mid-command and its container is already gone.
        let s = spec("wall", Limits::default());
        let started = Instant::now();
        let result = sandbox::supervise(&env.docker, &s.task_id, rules(3), async {
            let sb = Sandbox::start(&env.docker, &s, wt.path()).await.unwrap();
            sb.exec("sleep 100").await.unwrap();
        })
        .await;
        let took = started.elapsed();
        let err = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("wall-clock limit of 3s"), "{err}");
        assert!(took < Duration::from_secs(8), "{took:?}");
        assert!(own_containers(&env.docker, &s.task_id).await.is_empty());

        // An error after the sandbox was leaked (no Drop at all): the label sweep removes it.
        let s = spec("error", Limits::default());
        let result = sandbox::supervise(&env.docker, &s.task_id, rules(60), async {
            let sb = Sandbox::start(&env.docker, &s, wt.path()).await.unwrap();
            std::mem::forget(sb);
            Err::<(), _>("model failed")
        })
        .await;
        assert!(matches!(result, Ok(Err("model failed"))));
        assert!(own_containers(&env.docker, &s.task_id).await.is_empty());

        // A panic: removed first, then the panic goes on.
        let s = spec("panic", Limits::default());
        let supervised = sandbox::supervise(&env.docker, &s.task_id, rules(60), async {
            let sb = Sandbox::start(&env.docker, &s, wt.path()).await.unwrap();
            assert!(sb.exec("true").await.unwrap().passed());
            panic!("bug in the agent loop");
        });
        let caught =
            futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(supervised)).await;
        let message = caught
            .err()
            .and_then(|p| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert_eq!(message, "bug in the agent loop");
        assert!(own_containers(&env.docker, &s.task_id).await.is_empty());

        // Success: the value comes back, and a sandbox the work forgot is removed too.
        let s = spec("ok", Limits::default());
        let value = sandbox::supervise(&env.docker, &s.task_id, rules(60), async {
            let _sb = Sandbox::start(&env.docker, &s, wt.path()).await.unwrap();
            42
        })
        .await
        .unwrap();
        assert_eq!(value, 42);
        assert!(own_containers(&env.docker, &s.task_id).await.is_empty());
    });
}

/// Creates (without starting) a container that claims to belong to `owner`.
async fn fake_owned_container(env: &Env, runner: &str, task: &str, owner: Option<&str>) -> String {
    let mut labels = std::collections::HashMap::from([
        (sandbox::LABEL_RUNNER_ID.to_string(), runner.to_string()),
        (sandbox::LABEL_TASK_ID.to_string(), task.to_string()),
    ]);
    if let Some(owner) = owner {
        labels.insert(sandbox::LABEL_OWNER.to_string(), owner.to_string());
    }
    let body = bollard::models::ContainerCreateBody {
        image: Some(env.image.clone()),
        cmd: Some(vec!["true".into()]),
        labels: Some(labels),
        network_disabled: Some(true),
        host_config: Some(bollard::models::HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    env.docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
        .unwrap()
        .id
}

#[test]
fn remove_orphans_removes_containers_of_dead_processes_only() {
    run(
        "remove_orphans_removes_containers_of_dead_processes_only",
        async {
            let env = env().await;
            let runner = format!("{RUNNER}-orphans-{}", std::process::id());
            let read = |p: &str| std::fs::read_to_string(p).unwrap().trim().to_string();
            let host = read("/proc/sys/kernel/hostname");
            let boot = read("/proc/sys/kernel/random/boot_id");
            let stat = read("/proc/self/stat");
            let start: u64 = stat[stat.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .nth(19)
                .unwrap()
                .parse()
                .unwrap();
            let me = std::process::id();
            let pid_max: u32 = read("/proc/sys/kernel/pid_max").parse().unwrap();
            let wt = tempfile::tempdir().unwrap();
            // This process, alive: a real sandbox.
            let live = Sandbox::start(
                &env.docker,
                &SandboxSpec {
                    image: Some(env.image.clone()),
                    runner_id: runner.clone(),
                    task_id: "live".into(),
                    ..SandboxSpec::default()
                },
                wt.path(),
            )
            .await
            .unwrap();
            let gone_pid = fake_owned_container(
                env,
                &runner,
                "gone",
                Some(&format!("{host}:{}:{start}:{boot}", pid_max + 1)),
            )
            .await;
            let recycled = fake_owned_container(
                env,
                &runner,
                "recycled",
                Some(&format!("{host}:{me}:{}:{boot}", start + 1)),
            )
            .await;
            let old_boot = fake_owned_container(
                env,
                &runner,
                "old-boot",
                Some(&format!("{host}:{me}:{start}:an-earlier-boot")),
            )
            .await;
            let other_host = fake_owned_container(
                env,
                &runner,
                "other-host",
                Some(&format!("elsewhere:{}:1:{boot}", pid_max + 1)),
            )
            .await;
            let unlabelled = fake_owned_container(env, &runner, "unlabelled", None).await;
            // Another runner id, dead owner: not this runner's business.
            let other_runner = fake_owned_container(
                env,
                &format!("{RUNNER}-orphans-other-{me}"),
                "x",
                Some(&format!("{host}:{}:{start}:{boot}", pid_max + 1)),
            )
            .await;

            let n = sandbox::remove_orphans(&env.docker, &runner).await.unwrap();
            let mut survivors = vec![];
            for (name, id) in [
                ("live", live.container_id()),
                ("gone", &gone_pid),
                ("recycled", &recycled),
                ("old-boot", &old_boot),
                ("other-host", &other_host),
                ("unlabelled", &unlabelled),
                ("other-runner", &other_runner),
            ] {
                if container_exists(&env.docker, id).await {
                    survivors.push(name);
                }
            }
            for id in [&other_host, &unlabelled, &other_runner] {
                let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build();
                let _ = env.docker.remove_container(id, Some(options)).await;
            }
            live.remove().await.unwrap();
            assert_eq!(
                survivors,
                ["live", "other-host", "unlabelled", "other-runner"]
            );
            assert_eq!(n, 3);
        },
    );
}

/// A one-shot TCP server on the address the containers of the default bridge see as their
/// gateway: this machine, created by this machine's Docker. Nothing outside is contacted.
struct GatewayServer {
    addr: std::net::SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl GatewayServer {
    async fn start(gateway: &str) -> GatewayServer {
        let listener = tokio::net::TcpListener::bind((gateway, 0))
            .await
            .unwrap_or_else(|e| panic!("cannot listen on the bridge gateway {gateway}: {e}"));
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ =
                    tokio::io::AsyncWriteExt::write_all(&mut conn, b"hello from the host\n").await;
            }
        });
        GatewayServer {
            addr,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for GatewayServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[test]
fn setup_phase_has_network_and_the_agent_phase_has_none() {
    run(
        "setup_phase_has_network_and_the_agent_phase_has_none",
        async {
            let env = env().await;
            let wt = tempfile::tempdir().unwrap();
            let networked = SandboxSpec {
                network: true,
                ..spec("setup", Limits::default())
            };
            let sb = Sandbox::start(&env.docker, &networked, wt.path())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let info = env
                .docker
                .inspect_container(sb.container_id(), None)
                .await
                .unwrap();
            let networks = info.network_settings.unwrap().networks.unwrap();
            assert_eq!(networks.keys().collect::<Vec<_>>(), ["bridge"]);
            let gateway = networks["bridge"].gateway.clone().unwrap();
            assert!(
                gateway.starts_with("172.")
                    || gateway.starts_with("10.")
                    || gateway.starts_with("192.168."),
                "not a private address: {gateway}"
            );
            let server = GatewayServer::start(&gateway).await;
            let (ip, port) = (server.addr.ip(), server.addr.port());
            let connect = format!(
                "python3 -c \"import socket\ntry:\n    s = socket.create_connection(('{ip}', {port}), timeout=3)\n    print('got:', s.recv(100).decode().strip())\nexcept OSError as e:\n    print('blocked:', e)\n\""
            );

            let setup = sb
                .setup(&connect, Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(setup.output, "got: hello from the host\n", "{setup:?}");
            assert_eq!(server.accepted(), 1);

            // Cut: Docker lists no network, the container has only loopback, and the same
            // connection now fails without reaching the server.
            let info = env
                .docker
                .inspect_container(sb.container_id(), None)
                .await
                .unwrap();
            let left = info
                .network_settings
                .and_then(|n| n.networks)
                .unwrap_or_default();
            assert!(left.is_empty(), "{:?}", left.keys());
            let o = sh(&sb, "ls /sys/class/net").await;
            assert_eq!(o.output, "lo\n");
            let o = sh(&sb, &connect).await;
            assert!(o.output.starts_with("blocked:"), "{}", o.output);
            assert_eq!(server.accepted(), 1);
            // Cutting again is harmless.
            sb.cut_network().await.unwrap();
            sb.remove().await.unwrap();

            // A failing setup fails, and the network is cut all the same.
            let sb = Sandbox::start(&env.docker, &networked, wt.path())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let err = sb
                .setup("echo installing; exit 3", Duration::from_secs(30))
                .await
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains("`echo installing; exit 3` failed: exit 3")
                    && err.ends_with("installing\n"),
                "{err}"
            );
            let o = sh(&sb, "ls /sys/class/net").await;
            assert_eq!(o.output, "lo\n");
            sb.remove().await.unwrap();
        },
    );
}

#[test]
fn supervise_stops_on_sigint_and_sigterm_and_removes_the_container() {
    run(
        "supervise_stops_on_sigint_and_sigterm_and_removes_the_container",
        async {
            let env = env().await;
            let wt = tempfile::tempdir().unwrap();
            let rules = sandbox::Supervision {
                wall_clock: Some(Duration::from_secs(60)),
                stop_on_signals: true,
            };
            for signal in ["INT", "TERM"] {
                let s = spec(&format!("sig{signal}"), Limits::default());
                let started = Instant::now();
                let result = sandbox::supervise(&env.docker, &s.task_id, rules, async {
                    let sb = Sandbox::start(&env.docker, &s, wt.path()).await.unwrap();
                    // `supervise` listens before it first polls the work: this process
                    // survives the signal, and the work is stopped in its command.
                    let kill = std::process::Command::new("kill")
                        .args([format!("-{signal}"), std::process::id().to_string()])
                        .status()
                        .unwrap();
                    assert!(kill.success());
                    sb.exec("sleep 100").await.unwrap();
                })
                .await;
                let err = result.err().map(|e| e.to_string()).unwrap_or_default();
                assert!(
                    err.starts_with(&format!(
                        "interrupted by SIG{signal}; the sandbox was removed"
                    )),
                    "{err}"
                );
                assert!(started.elapsed() < Duration::from_secs(20));
                assert!(own_containers(&env.docker, &s.task_id).await.is_empty());
            }
        },
    );
}
