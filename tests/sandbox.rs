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

/// Removes containers left by earlier test processes (task ids start with `p<pid>-`).
async fn remove_leftovers(docker: &bollard::Docker) {
    use bollard::query_parameters::ListContainersOptionsBuilder;
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!("{}={RUNNER}", sandbox::LABEL_RUNNER_ID)],
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
    let live: Vec<String> = list
        .iter()
        .filter_map(|c| c.labels.as_ref()?.get(sandbox::LABEL_TASK_ID).cloned())
        .filter(|t| {
            t.strip_prefix('p')
                .and_then(|r| r.split('-').next())
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect();
    let n = sandbox::remove_stale(docker, RUNNER, &live).await.unwrap();
    if n > 0 {
        eprintln!("removed {n} containers of earlier test runs");
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
