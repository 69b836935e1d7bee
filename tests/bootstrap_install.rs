//! The install path of `scripts/bootstrap`, proven on a machine where nothing is installed.
//!
//! CI runs on a machine that earlier sessions provisioned by hand, so it cannot see a broken
//! install step (the one that ran `-E apt-get update` as root did exactly that). Here the
//! script's package step runs with a PATH holding only recording stand-ins for `apt-get`,
//! `dpkg-query`, `sudo`, `cargo`, `rustc` and `id` plus the few real tools the script needs:
//! every Debian package reads as missing, and there is no node, npm or python3. The test asserts
//! the exact commands it would run, as root and as a user with sudo, and its one-line errors.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const BOOTSTRAP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bootstrap");

/// Real tools the script may use besides the stand-ins (bash builtins cover the rest).
const REAL_TOOLS: [&str; 7] = ["bash", "env", "dirname", "sed", "sort", "head", "cat"];

struct Sandbox {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    log: PathBuf,
}

#[derive(Clone, Copy)]
struct Machine {
    uid: u32,
    sudo: bool,
    rustc: &'static str,
    rustfmt: bool,
    /// cargo-nextest and cargo-hakari are installed.
    cargo_tools: bool,
}

const FRESH_ROOT: Machine = Machine {
    uid: 0,
    sudo: false,
    rustc: "1.95.0",
    rustfmt: true,
    cargo_tools: false,
};

fn write_exe(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/bash\n{body}\n")).expect("write stand-in");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn which(tool: &str) -> PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!("{tool} not found in /usr/bin or /bin");
}

impl Sandbox {
    fn new(m: Machine) -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin dir");
        let log = dir.path().join("commands.log");
        for tool in REAL_TOOLS {
            std::os::unix::fs::symlink(which(tool), bin.join(tool)).expect("symlink");
        }
        // Each stand-in records its argv (apt-get also the environment it was given).
        write_exe(
            &bin.join("apt-get"),
            "printf 'apt-get %s [DEBIAN_FRONTEND=%s TMPDIR=%s]\\n' \"$*\" \
             \"${DEBIAN_FRONTEND:-}\" \"${TMPDIR:-}\" >> \"$STANDIN_LOG\"\n\
             [ \"$(id -u)\" = 0 ] || { echo 'apt-get: not root' >&2; exit 100; }",
        );
        // Nothing is installed: dpkg-query knows no package.
        write_exe(
            &bin.join("dpkg-query"),
            "echo \"dpkg-query: no packages found matching ${!#}\" >&2; exit 1",
        );
        write_exe(
            &bin.join("id"),
            &format!(
                "if [ \"$1\" = -u ]; then echo \"${{STANDIN_UID:-{}}}\"; else echo uid={}; fi",
                m.uid, m.uid
            ),
        );
        if m.sudo {
            // sudo runs the command as root: the stand-in id answers 0 inside it.
            write_exe(
                &bin.join("sudo"),
                "printf 'sudo %s\\n' \"$*\" >> \"$STANDIN_LOG\"\n\
                 [ \"$1\" = -- ] && shift\n\
                 STANDIN_UID=0 exec \"$@\"",
            );
        }
        write_exe(
            &bin.join("rustc"),
            &format!("echo 'rustc {} (0000000 2026-01-01)'", m.rustc),
        );
        write_exe(
            &bin.join("cargo"),
            &format!(
                "case \"$1\" in\n\
                 fmt|clippy) [ \"{fmt}\" = 1 ] || exit 101; echo \"$1 1.0\" ;;\n\
                 nextest|hakari) [ \"{nx}\" = 1 ] || {{ echo \"error: no such command: $1\" >&2; exit 101; }} ;;\n\
                 *) printf 'cargo %s\\n' \"$*\" >> \"$STANDIN_LOG\" ;;\n\
                 esac",
                fmt = u8::from(m.rustfmt),
                nx = u8::from(m.cargo_tools),
            ),
        );
        Sandbox {
            _dir: dir,
            bin,
            log,
        }
    }

    /// Runs `scripts/bootstrap --packages-only` with only the sandbox on PATH.
    fn run(&self) -> (bool, String, Vec<String>) {
        let out = Command::new(self.bin.join("bash"))
            .arg(BOOTSTRAP)
            .arg("--packages-only")
            .env_clear()
            .env("PATH", &self.bin)
            .env("HOME", self._dir.path())
            .env("STANDIN_LOG", &self.log)
            .output()
            .expect("run scripts/bootstrap");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        (
            out.status.success(),
            text,
            log.lines().map(str::to_string).collect(),
        )
    }
}

/// The package list of the script, in its order, with the command-backed ones after it.
fn expected_packages() -> String {
    let script = std::fs::read_to_string(BOOTSTRAP).expect("read bootstrap");
    let start = script.find("APT_PACKAGES=(").expect("APT_PACKAGES list") + "APT_PACKAGES=(".len();
    let end = start + script[start..].find(')').expect("list end");
    let mut pkgs: Vec<&str> = script[start..end].split_whitespace().collect();
    assert!(pkgs.len() > 20, "{pkgs:?}");
    pkgs.extend(["nodejs", "npm", "python3", "python3-pip", "python3-venv"]);
    pkgs.join(" ")
}

const APT_ENV: &str = "[DEBIAN_FRONTEND=noninteractive TMPDIR=/var/tmp]";

/// `cargo install` of each pinned test tool, as the script lists them.
fn tool_installs() -> Vec<String> {
    let script = std::fs::read_to_string(BOOTSTRAP).expect("read bootstrap");
    let line = script
        .lines()
        .find_map(|l| l.strip_prefix("CARGO_TOOLS=("))
        .expect("CARGO_TOOLS list");
    let tools: Vec<String> = line
        .trim_end_matches(')')
        .split_whitespace()
        .map(|t| {
            let crate_at = t.trim_matches('"').split(':').next().unwrap_or_default();
            format!("cargo install --locked {crate_at}")
        })
        .collect();
    assert!(
        tools.iter().any(|t| t.contains("cargo-nextest@0.9.")),
        "{tools:?}"
    );
    tools
}

#[test]
fn as_root_on_a_bare_machine_it_installs_every_package_and_nextest() {
    let sb = Sandbox::new(FRESH_ROOT);
    let (ok, out, log) = sb.run();
    assert!(ok, "bootstrap failed as root:\n{out}");
    let pkgs = expected_packages();
    for must in [
        "build-essential",
        "pkg-config",
        "iproute2",
        "shellcheck",
        "chromium",
        "haproxy",
        // avdec_h264 (H.264 camera decoding) and x264enc (its test sender).
        "gstreamer1.0-libav",
        "gstreamer1.0-plugins-ugly",
    ] {
        assert!(pkgs.split(' ').any(|p| p == must), "{must} not installed");
    }
    assert_eq!(
        log,
        vec![
            format!("apt-get update -q {APT_ENV}"),
            format!("apt-get install -y -q --no-install-recommends {pkgs} {APT_ENV}"),
        ]
        .into_iter()
        .chain(tool_installs())
        .collect::<Vec<_>>(),
        "output:\n{out}"
    );
}

#[test]
fn as_a_user_with_sudo_it_installs_through_sudo_without_relying_on_env_keep() {
    let sb = Sandbox::new(Machine {
        uid: 1000,
        sudo: true,
        ..FRESH_ROOT
    });
    let (ok, out, log) = sb.run();
    assert!(ok, "bootstrap failed with sudo:\n{out}");
    let pkgs = expected_packages();
    let env = "env DEBIAN_FRONTEND=noninteractive TMPDIR=/var/tmp";
    assert_eq!(
        log,
        vec![
            format!("sudo -- {env} apt-get update -q"),
            format!("apt-get update -q {APT_ENV}"),
            format!("sudo -- {env} apt-get install -y -q --no-install-recommends {pkgs}"),
            format!("apt-get install -y -q --no-install-recommends {pkgs} {APT_ENV}"),
        ]
        .into_iter()
        // The cargo tools go to the user's own ~/.cargo, not root's.
        .chain(tool_installs())
        .collect::<Vec<_>>(),
        "output:\n{out}"
    );
}

#[test]
fn a_user_without_sudo_gets_one_line_naming_what_needs_root() {
    let sb = Sandbox::new(Machine {
        uid: 1000,
        sudo: false,
        ..FRESH_ROOT
    });
    let (ok, out, log) = sb.run();
    assert!(!ok);
    assert!(
        out.contains("need root (or sudo) to install: build-essential"),
        "{out}"
    );
    assert!(log.is_empty(), "nothing may run: {log:?}");
}

#[test]
fn an_old_rustc_or_a_missing_component_is_one_line_naming_the_fix() {
    let (ok, out, log) = Sandbox::new(Machine {
        rustc: "1.80.1",
        ..FRESH_ROOT
    })
    .run();
    assert!(!ok);
    assert!(
        out.contains("rustc 1.80.1 is older than the 1.95") && out.contains("rustup update"),
        "{out}"
    );
    assert!(log.is_empty(), "{log:?}");

    let (ok, out, _) = Sandbox::new(Machine {
        rustfmt: false,
        ..FRESH_ROOT
    })
    .run();
    assert!(!ok);
    assert!(out.contains("rustup component add rustfmt"), "{out}");
}

#[test]
fn with_everything_present_nothing_is_installed() {
    let sb = Sandbox::new(Machine {
        cargo_tools: true,
        ..FRESH_ROOT
    });
    // Every package reads as installed, and node, npm and python3 (with pip and venv) exist.
    write_exe(&sb.bin.join("dpkg-query"), "printf installed");
    for tool in ["node", "npm", "python3"] {
        write_exe(&sb.bin.join(tool), "exit 0");
    }
    let (ok, out, log) = sb.run();
    assert!(ok, "{out}");
    assert!(out.contains("Debian packages: all"), "{out}");
    assert!(log.is_empty(), "{log:?}");
}
