//! The inventory (`engine/INVENTORY.md`) against the uapi: every socket
//! option of the base's headers (`engine/inventory/uapi-options-6.12.txt`)
//! is either a row of `options::TABLE` (fate `saved`) or listed with
//! another fate and its reason. When the base tree is in the cache the
//! list is regenerated from its headers and compared
//! (`UDP_REPAIR_UPDATE_INVENTORY=1` rewrites the committed list).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use udp_repair_engine::options;

const FATES: &[&str] = &[
    "saved",
    "field",
    "refused",
    "read-only",
    "alias",
    "action",
    "not-udp",
    "gap",
];

fn level_number(level: &str) -> i32 {
    match level {
        "SOL_SOCKET" => libc::SOL_SOCKET,
        "SOL_IP" => libc::SOL_IP,
        "SOL_IPV6" => libc::SOL_IPV6,
        "SOL_UDP" => libc::SOL_UDP,
        l => panic!("unknown level {l}"),
    }
}

fn engine_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const LIST: &str = "inventory/uapi-options-6.12.txt";

fn committed() -> Vec<(String, String, i32)> {
    let text = std::fs::read_to_string(engine_dir().join(LIST)).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[0].to_string(), w[1].to_string(), w[2].parse().unwrap())
        })
        .collect()
}

/// `(level, number)` → (name, fate, reason) from the inventory's option
/// table.
fn inventory() -> HashMap<(i32, i32), (String, String, String)> {
    let text = std::fs::read_to_string(engine_dir().join("INVENTORY.md")).unwrap();
    let table = text
        .split("## Socket options")
        .nth(1)
        .expect("a Socket options section");
    let mut out = HashMap::new();
    for l in table.lines().filter(|l| l.starts_with("| SOL_")) {
        let c: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(c.len(), 5, "{l}");
        let key = (level_number(c[0]), c[2].parse::<i32>().unwrap());
        let dup = out.insert(key, (c[1].to_string(), c[3].to_string(), c[4].to_string()));
        assert!(dup.is_none(), "listed twice: {l}");
    }
    out
}

#[test]
fn every_uapi_option_is_saved_or_listed_with_its_fate() {
    let inv = inventory();
    let mut gaps = Vec::new();
    for (level, name, num) in committed() {
        let key = (level_number(&level), num);
        let (iname, fate, why) = inv
            .get(&key)
            .unwrap_or_else(|| panic!("{level} {name} ({num}) is not in INVENTORY.md"));
        assert_eq!(iname, &name, "{level} {num}");
        assert!(FATES.contains(&fate.as_str()), "{name}: fate {fate}");
        assert!(!why.is_empty(), "{name}: no reason");
        let in_table = options::lookup(key.0, key.1).is_some();
        assert_eq!(
            fate == "saved",
            in_table,
            "{name}: fate {fate}, in options::TABLE: {in_table}"
        );
        if fate == "refused" && level == "SOL_SOCKET" && name == "SO_DEBUG" {
            assert!(options::REFUSED_IF_SET
                .iter()
                .any(|(l, n, _, _)| (*l, *n) == key));
        }
        if fate == "gap" {
            gaps.push(name);
        }
    }
    eprintln!("inventory: {} known gaps: {}", gaps.len(), gaps.join(", "));
}

/// The option numbers of the uapi headers under `tree`, as the committed
/// list holds them.
fn from_headers(tree: &Path) -> Vec<String> {
    let files: &[(&str, &str, &str, &[&str])] = &[
        (
            "SOL_SOCKET",
            "include/uapi/asm-generic/socket.h",
            "SO_",
            &[],
        ),
        (
            "SOL_IP",
            "include/uapi/linux/in.h",
            "IP_",
            &["IP_PMTUDISC_", "IP_DEFAULT_"],
        ),
        // The protocol-independent multicast API (RFC 3678), at both
        // levels.
        (
            "SOL_IP",
            "include/uapi/linux/in.h",
            "MCAST_",
            &["MCAST_EXCLUDE", "MCAST_INCLUDE"],
        ),
        (
            "SOL_IPV6",
            "include/uapi/linux/in.h",
            "MCAST_",
            &["MCAST_EXCLUDE", "MCAST_INCLUDE"],
        ),
        (
            "SOL_IPV6",
            "include/uapi/linux/in6.h",
            "IPV6_",
            &[
                "IPV6_FL_",
                "IPV6_PMTUDISC_",
                "IPV6_PRIORITY_",
                "IPV6_TLV_",
                "IPV6_PREFER_SRC_",
                "IPV6_MIN_MTU",
                "IPV6_SRCRT_",
                "IPV6_OPT_",
            ],
        ),
        (
            "SOL_UDP",
            "include/uapi/linux/udp.h",
            "UDP_",
            &["UDP_ENCAP_"],
        ),
    ];
    let mut out = Vec::new();
    for (level, file, prefix, excl) in files {
        let text = std::fs::read_to_string(tree.join(file)).unwrap();
        let mut seen = Vec::new();
        for l in text.lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.len() < 3 || w[0] != "#define" || !w[1].starts_with(prefix) {
                continue;
            }
            if !w[2].bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if excl.iter().any(|e| w[1].starts_with(e)) {
                continue;
            }
            let line = format!("{level} {} {}", w[1], w[2]);
            if !seen.contains(&line) {
                seen.push(line.clone());
                out.push(line);
            }
        }
    }
    out
}

/// The base tree in the cache, if there.
fn base_tree() -> Option<PathBuf> {
    let cache = std::env::var_os("UDP_REPAIR_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/udp-repair")))?;
    let src = cache.join("src");
    let base = std::fs::read_dir(&src)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("6.12."))
        })?;
    let tree = base.join("trees/none");
    tree.join("include/uapi/linux/udp.h")
        .is_file()
        .then_some(tree)
}

#[test]
fn the_committed_list_is_the_base_headers() {
    let Some(tree) = base_tree() else {
        eprintln!("the 6.12 base tree is not in the cache: compared the committed list only");
        return;
    };
    let now = from_headers(&tree);
    let path = engine_dir().join(LIST);
    if std::env::var_os("UDP_REPAIR_UPDATE_INVENTORY").is_some() {
        let text = std::fs::read_to_string(&path).unwrap();
        let head: String = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&path, format!("{head}{}\n", now.join("\n"))).unwrap();
        return;
    }
    let committed: Vec<String> = committed()
        .into_iter()
        .map(|(l, n, v)| format!("{l} {n} {v}"))
        .collect();
    assert_eq!(
        committed,
        now,
        "{} differs from the headers of {}: regenerate with UDP_REPAIR_UPDATE_INVENTORY=1",
        LIST,
        tree.display()
    );
}
