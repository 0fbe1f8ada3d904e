//! `udp-repair patches edit | refresh | export` on a temporary copy of
//! the project (`UDP_REPAIR_ROOT`), so that the real `kernel-patches/`
//! is never written. The tests that need a base skip, saying why, when its
//! tarball is not on this machine; the base is imported into the cache
//! (`$UDP_REPAIR_CACHE`) once, and the edit branches here are named
//! `test-<pid>/...` and removed afterwards, so that a developer's own
//! `edit/<variant>` branches are left alone.

use std::path::{Path, PathBuf};
use std::process::Command;
use udp_repair::patches;
use udp_repair::workflow::{self, Change, EditTarget, ExportRequest, Identity, Project};
use udp_repair_vm::base::{self, Pin};
use udp_repair_vm::{Cache, Events};

fn real_patches() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-patches")
}

/// A temporary directory, removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new(what: &str) -> Self {
        let p = std::env::temp_dir().join(format!("udp-repair-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies `kernel-patches/` into `root`, the pins' tarballs made absolute
/// (a relative one is taken from the project root, which moved).
fn copy_project(root: &Path) {
    let status = Command::new("cp")
        .arg("-r")
        .arg(real_patches())
        .arg(root)
        .status()
        .unwrap();
    assert!(status.success());
    for name in base::names(&real_patches()) {
        let pin = Pin::load(&real_patches(), &name).unwrap();
        let file = root.join("kernel-patches/bases").join(&name);
        let text = std::fs::read_to_string(&file).unwrap();
        let text: String = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("tarball") {
                    format!("tarball = {}\n", pin.tarball.display())
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(file, text).unwrap();
    }
}

/// The project copy on `base`, or `None` (said) when the tarball is absent.
fn project(root: &Path, name: &str) -> Option<Project> {
    let patches_dir = root.join("kernel-patches");
    let pin = Pin::load(&patches_dir, name).unwrap();
    if !pin.tarball.is_file() {
        eprintln!(
            "skipping base {name}: its tarball {} is not on this machine",
            pin.tarball.display()
        );
        return None;
    }
    let git = base::ensure_base_repo(&pin, &Cache::from_env(), &Events::none()).unwrap();
    Some(Project {
        patches_dir,
        pin,
        git,
    })
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes the test's branches and worktree from the base repository.
struct Branches<'a> {
    git: &'a Path,
    worktree: PathBuf,
    names: Vec<String>,
}

impl Drop for Branches<'_> {
    fn drop(&mut self) {
        let run = |args: &[&str]| {
            let _ = Command::new("git")
                .current_dir(self.git)
                .args(args)
                .output();
        };
        let wt = self.worktree.display().to_string();
        run(&["worktree", "remove", "--force", &wt]);
        run(&["worktree", "prune"]);
        for b in &self.names {
            run(&["branch", "-q", "-D", b]);
        }
    }
}

/// Every file of `SERIES/BASE` of the copy equals the real one, byte for
/// byte but for a patch's `From <commit>` line.
fn assert_same_files(copy: &Project, series: &str) {
    let real = real_patches().join(series).join(&copy.pin.name);
    let ours = copy.series_dir(series);
    let list = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(list(&real), list(&ours), "{series}/{}", copy.pin.name);
    for f in list(&real) {
        let a = std::fs::read_to_string(real.join(&f)).unwrap();
        let b = std::fs::read_to_string(ours.join(&f)).unwrap();
        // A patch's first line names its commit, which differs between
        // imports of the base; the cover letter's is the null id.
        let (a, b) = if f.starts_with("0000-") {
            (a.as_str(), b.as_str())
        } else {
            (a.split_once('\n').unwrap().1, b.split_once('\n').unwrap().1)
        };
        assert!(
            a == b,
            "{series}/{}/{f} differs after edit + refresh",
            copy.pin.name
        );
    }
}

#[test]
fn edit_then_refresh_reproduces_every_series_on_both_bases_and_follows_a_change() {
    let tmp = Tmp::new("roundtrip");
    copy_project(&tmp.0);
    for name in base::names(&real_patches()) {
        let Some(p) = project(&tmp.0, &name) else {
            continue;
        };
        let mut guard = Branches {
            git: &p.git,
            worktree: tmp.0.join(format!("wt-{name}")),
            names: Vec::new(),
        };
        for variant in ["getsockopt", "recvmsg", "pending-lost"] {
            let target = EditTarget {
                branch: format!("test-{}/{variant}", std::process::id()),
                worktree: guard.worktree.clone(),
            };
            guard.names.push(target.branch.clone());
            // One worktree for the three: --force resets it in place.
            let edited = workflow::edit(&p, variant, &target, true).unwrap();
            assert_eq!(edited.series.len(), p.stack(variant).unwrap().len());
            // Without the patch files, refresh must write every one again
            // (only the cover letter, whose subject prefix it keeps, stays).
            for s in p.stack(variant).unwrap() {
                for f in udp_repair_vm::tree::patch_files(&p.series_dir(&s)).unwrap() {
                    std::fs::remove_file(f).unwrap();
                }
            }
            let r = workflow::refresh(&p, variant, &target).unwrap();
            for (f, c) in &r.files {
                let cover = f.ends_with("0000-cover-letter.patch");
                let want = if cover {
                    Change::Unchanged
                } else {
                    Change::Added
                };
                assert_eq!(*c, want, "{} on {name}", f.display());
            }
            for s in p.stack(variant).unwrap() {
                assert_same_files(&p, &s);
            }
            let e = workflow::edit(&p, variant, &target, false)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&target.branch) && e.contains("--force"), "{e}");
        }
        // A change: drop pending-lost's last patch, reword the one before.
        let wt = &guard.worktree;
        git(wt, &["reset", "-q", "--hard", "HEAD~1"]);
        let msg = git(wt, &["log", "-1", "--format=%B"]);
        let msg = msg.replacen("\n\n", "\n\nA sentence added in review.\n\n", 1);
        git(
            wt,
            &["commit", "-q", "--amend", "--cleanup=verbatim", "-m", &msg],
        );
        let note = [
            "notes",
            "add",
            "-f",
            "-m",
            "v2: a note for the reviewers",
            "HEAD",
        ];
        git(wt, &note);
        let target = EditTarget {
            branch: format!("test-{}/pending-lost", std::process::id()),
            worktree: wt.clone(),
        };
        let r = workflow::refresh(&p, "pending-lost", &target).unwrap();
        let dir = p.series_dir("pending-lost");
        let change = |f: &str| r.files.iter().find(|(p, _)| p == &dir.join(f)).map(|x| x.1);
        assert_eq!(change("0000-cover-letter.patch"), Some(Change::Changed));
        // 0001 is the same commit, but now patch 1 of 2.
        assert_eq!(
            change("0001-udp-add-UDP_REPAIR-socket-option.patch"),
            Some(Change::Changed)
        );
        let first =
            std::fs::read_to_string(dir.join("0001-udp-add-UDP_REPAIR-socket-option.patch"))
                .unwrap();
        assert!(first.contains("[PATCH net-next 1/2]"), "{first}");
        assert_eq!(
            change("0003-selftests-net-add-udp_pending_lost-test.patch"),
            Some(Change::Removed)
        );
        assert!(!dir
            .join("0003-selftests-net-add-udp_pending_lost-test.patch")
            .exists());
        let second = std::fs::read_to_string(
            dir.join("0002-udp-add-UDP_REPAIR_PENDING_LOST-to-make-a-dropped-pe.patch"),
        )
        .unwrap();
        assert!(second.contains("[PATCH net-next 2/2]") && second.contains("A sentence added"));
        assert!(
            second.contains("\n---\nv2: a note for the reviewers\n\n include/"),
            "{second}"
        );
        let cover = std::fs::read_to_string(dir.join("0000-cover-letter.patch")).unwrap();
        assert!(cover.contains("[PATCH net-next 0/2]"), "{cover}");
        // Refresh refuses a branch without cover commits, and a missing one.
        git(
            wt,
            &[
                "checkout",
                "-q",
                "-f",
                "-B",
                &target.branch,
                "refs/tags/base",
            ],
        );
        let e = workflow::refresh(&p, "pending-lost", &target)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no cover commits"), "{e}");
        let missing = EditTarget {
            branch: "test-no-such-branch".into(),
            worktree: wt.clone(),
        };
        let e = workflow::refresh(&p, "pending-lost", &missing)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no branch test-no-such-branch"), "{e}");
        drop(guard);
    }
}

fn jane() -> Identity {
    Identity {
        name: "Jane Doe".into(),
        email: "jane@example.com".into(),
    }
}

#[test]
fn export_writes_mboxes_that_apply_pass_checkpatch_and_carry_the_sender() {
    let tmp = Tmp::new("export");
    copy_project(&tmp.0);
    // A v2 changelog in each cover letter of the getsockopt stack.
    for name in base::names(&real_patches()) {
        for s in ["peek-zerolen", "getsockopt"] {
            let f = tmp
                .0
                .join("kernel-patches")
                .join(s)
                .join(&name)
                .join("0000-cover-letter.patch");
            let text = std::fs::read_to_string(&f).unwrap();
            let text = text.replacen("\n\n", "\n\nChanges in v2:\n- a test changelog\n\n", 1);
            std::fs::write(&f, text).unwrap();
        }
        // A per-patch note under `---`.
        let dir = tmp.0.join("kernel-patches/getsockopt").join(&name);
        let f = dir.join("0001-udp-add-UDP_REPAIR-socket-option.patch");
        let text = std::fs::read_to_string(&f).unwrap();
        let text = text.replacen("\n---\n", "\n---\nv2: a test note\n\n", 1);
        std::fs::write(&f, text).unwrap();
    }
    for name in base::names(&real_patches()) {
        let Some(p) = project(&tmp.0, &name) else {
            continue;
        };
        for (variant, version, rfc) in [("getsockopt", 2, false), ("recvmsg", 1, true)] {
            let out = tmp.0.join(format!("out-{name}-{variant}"));
            let req = ExportRequest {
                version,
                tree: None,
                rfc,
                out: out.clone(),
                identity: jane(),
                base_commit: None,
                series: Vec::new(),
            };
            let done = workflow::export(&p, variant, &req).unwrap();
            assert_eq!(done.len(), p.stack(variant).unwrap().len());
            for s in &done {
                let tree = if s.series == "peek-zerolen" {
                    "net"
                } else {
                    "net-next"
                };
                let prefix = match (rfc, version) {
                    (true, 1) => format!("[RFC PATCH {tree} "),
                    (false, 1) => format!("[PATCH {tree} "),
                    (_, v) => format!("[PATCH {tree} v{v} "),
                };
                let n = s.files.len() - 1;
                for (i, (f, subject)) in s.files.iter().enumerate() {
                    let fname = f.file_name().unwrap().to_string_lossy();
                    if version > 1 {
                        assert!(fname.starts_with(&format!("v{version}-{i:04}-")), "{fname}");
                    }
                    assert!(
                        subject.starts_with(&format!("{prefix}{i}/{n}] ")),
                        "{fname}: {subject}"
                    );
                    let text = std::fs::read_to_string(f).unwrap();
                    assert!(!text.contains(workflow::PLACEHOLDER), "{fname}");
                    assert!(
                        text.contains("\nFrom: Jane Doe <jane@example.com>\n"),
                        "{fname}"
                    );
                    assert!(text.contains("\nTo: ") && text.contains("netdev@vger.kernel.org"));
                    // (a cover letter may say in its text why it has none)
                    assert!(!text.contains("\nbase-commit: "), "{fname}");
                    if i == 0 {
                        assert!(!text.contains("*** "), "{fname}");
                        if version > 1 {
                            assert!(text.contains("Changes in v2:"), "{fname}");
                        }
                        continue;
                    }
                    assert!(
                        text.contains("\nSigned-off-by: Jane Doe <jane@example.com>\n"),
                        "{fname}"
                    );
                    if s.series == "getsockopt"
                        && fname.ends_with("0001-udp-add-UDP_REPAIR-socket-option.patch")
                    {
                        let note = "\n---\nv2: a test note\n\n include/";
                        assert!(text.contains(note), "{text}");
                    }
                    let v = patches::checkpatch(&p.git, f).unwrap();
                    assert!(v.clean(), "{fname}: {}", v.report);
                }
                assert!(
                    s.to.iter().any(|a| a.contains("kuba@kernel.org")),
                    "{:?}",
                    s.to
                );
                assert!(
                    s.cc.iter().any(|a| a == "netdev@vger.kernel.org"),
                    "{:?}",
                    s.cc
                );
                // The mbox applies with git am to the base alone.
                let wt = tmp.0.join(format!("am-{name}"));
                if !wt.exists() {
                    let w = wt.display().to_string();
                    git(
                        &p.git,
                        &["worktree", "add", "-q", "--detach", &w, "refs/tags/base"],
                    );
                }
                git(&wt, &["checkout", "-q", "-f", "--detach", "refs/tags/base"]);
                let mut args = vec!["am".to_string(), "-q".into()];
                args.extend(s.files[1..].iter().map(|(f, _)| f.display().to_string()));
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                git(&wt, &args);
                let log = git(&wt, &["log", "--format=%an <%ae>", "refs/tags/base..HEAD"]);
                assert_eq!(log.lines().count(), n);
                assert!(
                    log.lines().all(|l| l == "Jane Doe <jane@example.com>"),
                    "{log}"
                );
            }
        }
        let wt = tmp.0.join(format!("am-{name}")).display().to_string();
        let _ = Command::new("git")
            .current_dir(&p.git)
            .args(["worktree", "remove", "--force", &wt])
            .output();
    }
}

/// Runs the binary on the copy at `root`, with a git configuration of
/// `config` alone (no user or system files).
fn udp_repair(root: &Path, config: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_udp-repair"));
    c.current_dir(root)
        .env("UDP_REPAIR_ROOT", root)
        .env("HOME", root)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_COUNT", config.len().to_string())
        .args(args);
    for (i, (k, v)) in config.iter().enumerate() {
        c.env(format!("GIT_CONFIG_KEY_{i}"), k)
            .env(format!("GIT_CONFIG_VALUE_{i}"), v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn export_refuses_without_an_identity_and_v2_without_a_changelog() {
    let tmp = Tmp::new("refusals");
    copy_project(&tmp.0);
    let out = tmp.0.join("out");
    let out = out.to_str().unwrap();
    let (rc, err) = udp_repair(
        &tmp.0,
        &[],
        &["patches", "export", "--variant", "recvmsg", "-o", out],
    );
    assert_eq!(rc, 2, "{err}");
    assert!(
        err.contains("git config --global user.name")
            && err.contains("git config --global user.email"),
        "{err}"
    );
    let me = [
        ("user.name", "Jane Doe"),
        ("user.email", "jane@example.com"),
    ];
    let (rc, err) = udp_repair(
        &tmp.0,
        &me,
        &[
            "patches",
            "export",
            "--variant",
            "getsockopt",
            "--version",
            "2",
            "-o",
            out,
        ],
    );
    assert_eq!(rc, 2, "{err}");
    assert!(
        err.contains("series peek-zerolen: v2 needs a changelog") && err.contains("Changes in v2:"),
        "{err}"
    );
    assert!(!Path::new(out).exists(), "nothing written on a refusal");
    let (rc, err) = udp_repair(
        &tmp.0,
        &[
            ("user.name", "UDP Repair Project"),
            ("user.email", "udp-repair@example.org"),
        ],
        &["patches", "export", "--variant", "recvmsg", "-o", out],
    );
    assert_eq!(rc, 2, "{err}");
    assert!(err.contains("placeholder"), "{err}");
}
