//! `udp-repair`: build, boot and test UDP_REPAIR kernels.

use clap::{Args, Parser, Subcommand, ValueEnum};

mod imagecmd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use udp_repair::pipeline::{self, Options, Runner};
use udp_repair::{bench, patches, report, suites, workflow};
use udp_repair_vm::qemu::Accel;
use udp_repair_vm::Cache;

/// Exit status when the infrastructure failed (build, boot, timeout, splat).
const EXIT_INFRA: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "udp-repair",
    version,
    about = "Build, boot and test kernels carrying the UDP_REPAIR patch series",
    long_about = "Build, boot and test kernels carrying the UDP_REPAIR patch series.\n\n\
        A kernel is a pinned base (--base: kernel-patches/bases/NAME; 6.12, Debian's \
        linux-source-6.12, is the default; 7.1 is mainline 7.1.5 from ../shared/bases/) plus \
        a variant: the series kernel-patches/VARIANTS stacks for it, each from \
        kernel-patches/SERIES/BASE/*.patch (`none` is the unpatched base), configured from \
        vm/configs fragments. Builds are cached and incremental under ~/.cache/udp-repair \
        ($UDP_REPAIR_CACHE).\n\n\
        Exit status: 0 all tests passed, 1 a test failed, 2 the infrastructure failed \
        (missing package, patch does not apply, build, boot, timeout, kernel splat, \
        QEMU's own fatal error).\n\n\
        Each run keeps its logs and its record (run.json) in ~/.cache/udp-repair/runs/; \
        `udp-repair parse DIR` prints its report again without a boot. The dump/restore \
        engine behind dump, show and restore is the udp-repair-engine crate (engine/)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build the kernel(s) and the guest test programs.
    Build {
        /// Variant: none, a variant of kernel-patches/VARIANTS, or all.
        #[arg(long, short, default_value = "none", value_parser = variant_or_all)]
        variant: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Boot a kernel and run one command in it; its output and exit status
    /// are the command's.
    Run {
        /// Variant: none or a variant of kernel-patches/VARIANTS.
        #[arg(long, short, default_value = "none", value_parser = variant)]
        variant: String,
        /// A host file to copy into the guest's /include (repeatable).
        #[arg(long)]
        include: Vec<PathBuf>,
        #[command(flatten)]
        common: Common,
        /// The command, after `--`.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Build, boot and run the test suites; report per test.
    Test {
        /// Variant: none, a variant of kernel-patches/VARIANTS, or all (repeatable).
        #[arg(long, short, default_value = "none", value_parser = variant_or_all)]
        variant: Vec<String>,
        /// Run only this suite (repeatable); `--list-suites` names them.
        #[arg(long, short)]
        suite: Vec<String>,
        /// List the suites and their programs, then exit.
        #[arg(long)]
        list_suites: bool,
        /// Print KTAP on stdout instead of the human summary.
        #[arg(long)]
        ktap: bool,
        /// Also write one JSON record per test to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Run the fuzz suite's random calls for SECS seconds, with no
        /// call bound, instead of their default (200 000 calls or 20 s):
        /// under `--config debug` about 6 000 calls a second, of which
        /// 23% (pending-lost), 24% (recvmsg) or 38% (getsockopt) reach the
        /// booted series' options (the figures print their count;
        /// `--fuzz-secs 750` for about 10^6 of them); the unit's deadline
        /// grows as much. The `none` variant keeps the default: its kernel
        /// has none of the options.
        #[arg(long, value_name = "SECS")]
        fuzz_secs: Option<u32>,
        #[command(flatten)]
        common: Common,
    },
    /// The patch workflow: check each series as netdev's CI would, export
    /// it for the list, edit it as git commits and refresh the files.
    Patches {
        #[command(subcommand)]
        cmd: PatchesCmd,
    },
    /// Print build and boot figures: cold build, no-op rebuild, rebuild
    /// after touching/editing net/ipv4/udp.c, boot to first result. Run on
    /// an idle machine.
    Bench {
        /// Also time virtme-ng's `vng --build` cold on the same base.
        #[arg(long)]
        vng: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Print the report of a kept run directory (the `logs in` line of
    /// `test`: run.json, console.log, results.log) or of a guest log on
    /// standard input (`-`: a results channel or a vng log; units the host
    /// decided, such as a kselftest missing from the tree, are not in a
    /// log). Boots nothing; the exit status is `test`'s.
    Parse {
        /// A run directory, or `-` for a log on standard input.
        #[arg(value_name = "RUN_DIR|-")]
        path: PathBuf,
        /// Print KTAP on stdout instead of the human summary.
        #[arg(long)]
        ktap: bool,
        /// Also write one JSON record per test to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    #[command(flatten)]
    Image(imagecmd::ImageCmd),
}

#[derive(Subcommand, Debug)]
enum PatchesCmd {
    /// Check each series of the variant(s) as a reviewer and netdev's CI
    /// would, one verdict per check: applies in order, checkpatch --strict
    /// with netdev's flags, W=1 build of the touched objects, kernel-doc,
    /// uapi headers standalone as C and C++, selftest Makefile/.gitignore
    /// entries, Signed-off-by and subject, cover letter, Fixes: tags.
    /// Exit status: 0 every check passed, 1 a check failed, 2 the
    /// infrastructure failed.
    Check {
        /// Variant, or all (repeatable).
        #[arg(long, short, default_value = "all", value_parser = variant_or_all)]
        variant: Vec<String>,
        /// Build every patch of a series in turn (W=1), as netdev does for
        /// bisectability, instead of the series as a whole.
        #[arg(long)]
        each: bool,
        /// Also write the verdicts as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Make the variant's series a git branch to rebase and amend.
    ///
    /// A branch of the base with the variant's series applied as
    /// commits: branch edit/VARIANT of the
    /// cached base repository, checked out in its own worktree
    /// ($UDP_REPAIR_CACHE/src/<base version>/edit/VARIANT). Each series
    /// the variant stacks starts with an empty commit holding its cover
    /// letter (subject, body, then a `Series: NAME` trailer), followed by
    /// its patches (`git am`). Prints the worktree and the refresh
    /// command. Refuses an existing branch, which may hold your edits,
    /// unless --force.
    Edit {
        /// Variant of kernel-patches/VARIANTS.
        #[arg(long, short, value_parser = variant)]
        variant: String,
        /// Throw away an existing edit branch (its commits) and the changes
        /// in its worktree, and start again from the series files (the
        /// worktree is reset in place; ignored files, such as a build,
        /// stay).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        base: BaseArg,
    },
    /// Write the edit branch back into the series files.
    ///
    /// The branch edit/VARIANT goes into kernel-patches/SERIES/BASE/, split
    /// at the cover commits, each cover letter regenerated from its commit
    /// (subject prefix kept from the series' existing cover letter,
    /// shortlog and diffstat from git), the patches with git
    /// format-patch. Removes patch files that are no longer part of a
    /// series and lists what changed; a file differing only in its `From
    /// <commit>` line is left as it is. Refuses a missing branch, one
    /// without cover commits, or series other than VARIANTS stacks.
    Refresh {
        /// Variant of kernel-patches/VARIANTS.
        #[arg(long, short, value_parser = variant)]
        variant: String,
        #[command(flatten)]
        base: BaseArg,
    },
    /// Write each series of the variant as mboxes to post, in DIR/SERIES/.
    ///
    /// Each series, from its files, as a numbered mbox series (git format-patch:
    /// [PATCH TREE vN M/T], the cover letter, notes under `---` kept),
    /// each applied to the base alone as it will be posted; From: and
    /// Signed-off-by: are yours (git config user.name/user.email) instead
    /// of the placeholder, To: the maintainers and Cc: the reviewers and
    /// lists scripts/get_maintainer.pl names on the base tree. No
    /// base-commit: (the project's bases are imports without history).
    /// Refuses without an identity, and for N > 1 without a `Changes in
    /// vN` (or `vN:`) changelog in the cover letter.
    Export {
        /// Variant of kernel-patches/VARIANTS.
        #[arg(long, short, value_parser = variant)]
        variant: String,
        /// The version (vN in the subjects; none for 1).
        #[arg(long, value_name = "N", default_value_t = 1)]
        version: u32,
        /// The netdev tree in the subjects (default: the one of each
        /// series' current prefix: peek-zerolen is net, the others
        /// net-next).
        #[arg(long, value_parser = ["net", "net-next"])]
        tree: Option<String>,
        /// Mark the series RFC (the files' own RFC is not kept without it).
        #[arg(long)]
        rfc: bool,
        /// The output directory; each series goes to DIR/SERIES/, which
        /// must be empty or absent.
        #[arg(long, short, value_name = "DIR")]
        out: PathBuf,
        /// Export only this series of the variant (repeatable; default:
        /// every series it stacks), e.g. getsockopt as v2 while the net
        /// fix peek-zerolen stays at v1.
        #[arg(long, value_name = "SERIES")]
        series: Vec<String>,
        #[command(flatten)]
        base: BaseArg,
    },
}

/// `--base` alone, for the commands that build nothing.
#[derive(Args, Debug)]
struct BaseArg {
    /// The base: a name in kernel-patches/bases/ (6.12, the default; 7.1).
    #[arg(long, default_value = udp_repair_vm::base::DEFAULT, value_parser = base_name)]
    base: String,
}

impl BaseArg {
    /// The project on this base, its repository imported if needed.
    fn project(&self, cache: &Cache) -> udp_repair_vm::Result<workflow::Project> {
        let patches_dir = project_root().join("kernel-patches");
        let pin = udp_repair_vm::base::Pin::load(&patches_dir, &self.base)?;
        let events = udp_repair::progress::stderr_events(false);
        let git = udp_repair_vm::base::ensure_base_repo(&pin, cache, &events)?;
        Ok(workflow::Project {
            patches_dir,
            pin,
            git,
        })
    }
}

#[derive(Args, Debug)]
struct Common {
    /// The base: a name in kernel-patches/bases/ (6.12: Debian's
    /// linux-source-6.12, the default; 7.1: mainline 7.1.5, its tarball in
    /// ../shared/bases/).
    #[arg(long, default_value = udp_repair_vm::base::DEFAULT, value_parser = base_name)]
    base: String,
    /// Your kernel tree instead of the pinned base: with --variant none it
    /// is built as it is (out of tree, never modified); with another
    /// variant, that variant's series for --base (use --base 7.1 for a
    /// mainline or net-next tree) is applied to a `git clone --shared` of
    /// it in the cache at its HEAD (a tree without git is copied once),
    /// labelled with `git describe` and the variant.
    #[arg(long, value_name = "PATH")]
    kernel_tree: Option<PathBuf>,
    /// Config fragment from vm/configs (repeatable; `debug` adds KASAN,
    /// KFENCE, lockdep, UBSAN).
    #[arg(long = "config", default_value = "base")]
    configs: Vec<String>,
    /// Accelerator (both runners follow it).
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    accel: AccelArg,
    /// Guest deadline in seconds, boot included; the guest is killed then
    /// and its console log kept (default: for `test`, 90 plus every test
    /// program's own limit; for `run`, 300).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Extra kernel command line word (repeatable), e.g. `--cmdline
    /// udp.debug=1`.
    #[arg(long, value_name = "WORD")]
    cmdline: Vec<String>,
    /// Parallel make jobs (default: the number of CPUs).
    #[arg(long, short)]
    jobs: Option<usize>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024)]
    memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Who boots the guest.
    #[arg(long, value_enum, default_value_t = RunnerArg::Qemu)]
    runner: RunnerArg,
    /// Show make's output and the guest console as they come.
    #[arg(long)]
    verbose: bool,
}

impl Common {
    fn options(&self) -> Options {
        let mut configs = self.configs.clone();
        if !configs.iter().any(|c| c == "base") {
            configs.insert(0, "base".into());
        }
        let runner = Runner::from(self.runner);
        if runner == Runner::Vng && !configs.iter().any(|c| c == "vng") {
            configs.push("vng".into());
        }
        Options {
            root: project_root(),
            base: self.base.clone(),
            kernel_tree: self.kernel_tree.clone(),
            configs,
            accel: self.accel.into(),
            timeout: self.timeout.map(Duration::from_secs),
            cmdline: self.cmdline.clone(),
            jobs: self.jobs.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            }),
            verbose: self.verbose,
            events: udp_repair::progress::stderr_events(self.verbose),
            memory_mb: self.memory,
            cpus: self.cpus,
            runner,
            fuzz_secs: None,
        }
    }
}

/// The guest accelerator, as the CLI takes it (vm's [`Accel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AccelArg {
    /// KVM if a bounded probe boot shows it works here (the verdict is
    /// cached), else TCG.
    Auto,
    /// KVM, forced.
    Kvm,
    /// TCG (software emulation), forced.
    Tcg,
}

impl From<AccelArg> for Accel {
    fn from(a: AccelArg) -> Self {
        match a {
            AccelArg::Auto => Accel::Auto,
            AccelArg::Kvm => Accel::Kvm,
            AccelArg::Tcg => Accel::Tcg,
        }
    }
}

/// Who boots the guest, as the CLI takes it (the pipeline's [`Runner`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RunnerArg {
    /// The project's QEMU runner and initramfs.
    Qemu,
    /// virtme-ng (`vng`, where installed; adds the `vng` config fragment;
    /// programs run from the host's root).
    Vng,
}

impl From<RunnerArg> for Runner {
    fn from(r: RunnerArg) -> Self {
        match r {
            RunnerArg::Qemu => Runner::Qemu,
            RunnerArg::Vng => Runner::Vng,
        }
    }
}

/// `s` if it is one of `known`, else the error naming `what` (`base`,
/// `variant`), the choices and where they are defined (`place`, under
/// kernel-patches/).
fn one_of(s: &str, what: &str, known: Vec<String>, place: &str) -> Result<String, String> {
    if known.iter().any(|k| k == s) {
        return Ok(s.to_string());
    }
    Err(format!(
        "no {what} {s:?}: {what}s are {} (in {})",
        known.join(", "),
        project_root().join("kernel-patches").join(place).display()
    ))
}

/// A `--base` value: a pin file of kernel-patches/bases/, checked when the
/// arguments are parsed.
fn base_name(s: &str) -> Result<String, String> {
    let dir = project_root().join("kernel-patches");
    one_of(s, "base", udp_repair_vm::base::names(&dir), "bases")
}

/// A `--variant` value: `none` or a variant of kernel-patches/VARIANTS,
/// checked when the arguments are parsed.
fn variant(s: &str) -> Result<String, String> {
    let dir = project_root().join("kernel-patches");
    one_of(
        s,
        "variant",
        udp_repair_vm::tree::variants(&dir),
        "VARIANTS",
    )
}

/// A `--variant` value where `all` is allowed too.
fn variant_or_all(s: &str) -> Result<String, String> {
    if s == "all" {
        Ok(s.to_string())
    } else {
        variant(s).map_err(|e| format!("{e}, or all"))
    }
}

/// The project checkout: `$UDP_REPAIR_ROOT`, else the nearest ancestor of
/// the working directory holding `kernel-patches/VARIANTS`, else where this
/// binary was built from.
fn project_root() -> PathBuf {
    if let Some(p) = std::env::var_os("UDP_REPAIR_ROOT") {
        return PathBuf::from(p);
    }
    if let Ok(cwd) = std::env::current_dir() {
        if let Some(p) = cwd
            .ancestors()
            .find(|p| p.join("kernel-patches/VARIANTS").is_file())
        {
            return p.to_path_buf();
        }
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cache = Cache::from_env();
    match cli.cmd {
        Cmd::Image(c) => imagecmd::run(c),
        Cmd::Build { variant, common } => {
            let opts = common.options();
            for v in pipeline::expand_variants(&opts.root, &variant) {
                match pipeline::kernel(&opts, &cache, &v) {
                    Ok(k) => println!(
                        "{}: {} {}",
                        k.tree.label,
                        k.built.release,
                        k.built.bzimage.display()
                    ),
                    Err(e) => return infra(&e),
                }
            }
            match udp_repair::guest::selftests(&opts.root) {
                Ok(p) => println!("guest selftests: {}", p.display()),
                Err(e) => return infra(&e),
            }
            ExitCode::SUCCESS
        }
        Cmd::Patches { cmd } => patches_cmd(cmd, &cache),
        Cmd::Bench { vng, common } => {
            if common.runner != RunnerArg::Qemu {
                return usage(
                    "bench times the QEMU runner's boot; --vng adds virtme-ng's build figure",
                );
            }
            match bench::run(&common.options(), &cache, vng) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => infra(&e),
            }
        }
        Cmd::Run {
            variant,
            include,
            common,
            cmd,
        } => {
            let opts = common.options();
            match pipeline::run_command(&opts, &cache, &variant, &include, &cmd) {
                Ok((out, rc, _release)) => {
                    print!("{out}");
                    ExitCode::from(u8::try_from(rc).unwrap_or(1))
                }
                Err(e) => infra(&e),
            }
        }
        Cmd::Test {
            variant,
            suite,
            list_suites,
            ktap,
            json,
            fuzz_secs,
            common,
        } => {
            if list_suites {
                for u in suites::UNITS {
                    println!(
                        "{:<12} {:<24} {:?} {:?}",
                        u.suite, u.name, u.program, u.args
                    );
                }
                return ExitCode::SUCCESS;
            }
            let known = suites::suite_names();
            if let Some(bad) = suite.iter().find(|s| !known.contains(&s.as_str())) {
                eprintln!(
                    "udp-repair: unknown suite {bad:?}; suites: {}",
                    known.join(", ")
                );
                return ExitCode::from(EXIT_INFRA);
            }
            let units: Vec<&suites::Unit> = suites::UNITS
                .iter()
                .filter(|u| suite.is_empty() || suite.iter().any(|s| s == u.suite))
                .collect();
            let opts = Options {
                fuzz_secs,
                ..common.options()
            };
            let variants = pipeline::expand_variants(&opts.root, &variant);
            let selftests = match udp_repair::guest::selftests(&opts.root) {
                Ok(p) => p,
                Err(e) => return infra(&e),
            };
            let mut runs = Vec::new();
            for v in &variants {
                runs.push(pipeline::test_variant(&opts, &cache, v, &units, &selftests));
            }
            print_report(&runs, ktap, json.as_deref())
        }
        Cmd::Parse { path, ktap, json } => {
            let run = if path.as_os_str() == "-" {
                // A console carries whatever bytes the guest printed: read
                // them as parse DIR does, invalid UTF-8 replaced.
                let mut bytes = Vec::new();
                if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes) {
                    eprintln!("udp-repair parse: reading standard input: {e}");
                    return ExitCode::from(EXIT_INFRA);
                }
                udp_repair::results::parse_log(&String::from_utf8_lossy(&bytes))
            } else {
                udp_repair::results::parse_dir(&path)
            };
            match run {
                Ok(run) => print_report(&[run], ktap, json.as_deref()),
                Err(e) => {
                    eprintln!("udp-repair parse: {e}");
                    ExitCode::from(EXIT_INFRA)
                }
            }
        }
    }
}

/// `udp-repair patches ...`.
fn patches_cmd(cmd: PatchesCmd, cache: &Cache) -> ExitCode {
    match cmd {
        PatchesCmd::Check {
            variant,
            each,
            json,
            common,
        } => {
            if common.runner != RunnerArg::Qemu {
                return usage("patches check boots nothing: --runner does not apply");
            }
            let opts = common.options();
            let variants = pipeline::expand_variants(&opts.root, &variant);
            let req = patches::CheckRequest {
                variants: &variants,
                each,
                json: json.as_deref(),
            };
            match patches::check(&opts, cache, &req) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => infra(&e),
            }
        }
        PatchesCmd::Edit {
            variant,
            force,
            base,
        } => {
            let edited = base.project(cache).and_then(|p| {
                let target = workflow::EditTarget::for_variant(cache, &p.pin, &variant);
                workflow::edit(&p, &variant, &target, force)
            });
            match edited {
                Ok(e) => {
                    for (s, n) in &e.series {
                        println!("{s}: cover commit and {n} patch(es)");
                    }
                    println!(
                        "branch {} in {}",
                        e.target.branch,
                        e.target.worktree.display()
                    );
                    println!(
                        "edit there (rebase, amend; the cover letters are the empty `Series:` \
                         commits), then: udp-repair patches refresh --variant {variant} --base {}",
                        base.base
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => infra(&e),
            }
        }
        PatchesCmd::Refresh { variant, base } => {
            let refreshed = base.project(cache).and_then(|p| {
                let target = workflow::EditTarget::for_variant(cache, &p.pin, &variant);
                workflow::refresh(&p, &variant, &target)
            });
            match refreshed {
                Ok(r) => {
                    let root = project_root();
                    let mut changed = 0;
                    for (f, c) in &r.files {
                        let name = f.strip_prefix(&root).unwrap_or(f).display();
                        match c {
                            workflow::Change::Unchanged => {}
                            c => {
                                changed += 1;
                                println!("{:<9} {name}", format!("{c:?}").to_lowercase());
                            }
                        }
                    }
                    println!(
                        "{changed} file(s) changed, {} unchanged",
                        r.files.len() - changed
                    );
                    for (f, copy) in &r.copies {
                        println!(
                            "warning: {} held the same patch as {} before this change, and \
                             still holds the old one: carry the change over (patches edit \
                             --variant of that series) or keep them apart on purpose",
                            copy.strip_prefix(&root).unwrap_or(copy).display(),
                            f.strip_prefix(&root).unwrap_or(f).display()
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => infra(&e),
            }
        }
        PatchesCmd::Export {
            variant,
            version,
            tree,
            rfc,
            out,
            series,
            base,
        } => {
            let root = project_root();
            let identity = match workflow::Identity::from_git_config(&root) {
                Ok(i) => i,
                Err(e) => return infra(&e),
            };
            let req = workflow::ExportRequest {
                version,
                tree,
                rfc,
                out,
                identity,
                base_commit: None,
                series,
            };
            // The checks that need no base first: a refusal costs nothing.
            if let Err(e) =
                workflow::export_plan(&root.join("kernel-patches"), &base.base, &variant, &req)
            {
                return infra(&e);
            }
            match base
                .project(cache)
                .and_then(|p| workflow::export(&p, &variant, &req))
            {
                Ok(done) => {
                    for s in &done {
                        println!("{}: {}", s.series, s.dir.display());
                        for (f, subject) in &s.files {
                            let name = f.file_name().unwrap_or_default().to_string_lossy();
                            println!("  {name}: {subject}");
                        }
                        println!("  To: {}", s.to.join(", "));
                        println!("  Cc: {}", s.cc.join(", "));
                    }
                    println!(
                        "no base-commit: base {} is an import of a tarball without history, \
                         so no one else has its commit",
                        base.base
                    );
                    println!(
                        "From: and Signed-off-by: are {}; send with git send-email DIR/SERIES/*.patch",
                        req.identity.ident()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => infra(&e),
            }
        }
    }
}

/// Prints the report of `runs` (human or KTAP), writes the JSON records
/// when asked, and returns the exit status `test` documents.
fn print_report(runs: &[report::Run], ktap: bool, json: Option<&std::path::Path>) -> ExitCode {
    if ktap {
        print!("{}", report::ktap(runs));
    } else {
        print!("{}", report::human(runs));
    }
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report::json(runs)).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("udp-repair: writing {}: {e}", path.display());
            return ExitCode::from(EXIT_INFRA);
        }
    }
    ExitCode::from(report::exit_code(runs))
}

/// A combination of arguments that cannot work: said, exit status 2.
fn usage(why: &str) -> ExitCode {
    eprintln!("udp-repair: {why}");
    ExitCode::from(EXIT_INFRA)
}

fn infra(e: &udp_repair_vm::Error) -> ExitCode {
    eprintln!("udp-repair: {e}");
    ExitCode::from(EXIT_INFRA)
}
