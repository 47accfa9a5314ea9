//! `cargo xtask gen-protobuf`: writes the Kubernetes protobuf field table
//! that `skiff_core::protobuf` decodes request bodies with.
//!
//! The field numbers come from the k8s-pb crate's prost bindings (generated
//! from upstream's `generated.proto` files); the JSON names come from our
//! own schemas, matched the way prost snake-cases proto field names.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use heck::ToLowerCamelCase;

/// The k8s-pb modules whose messages the API can receive.
const MODULES: &[&str] = &[
    "api",
    "apimachinery/pkg/apis/meta/v1",
    "apimachinery/pkg/api/resource",
    "apimachinery/pkg/util/intstr",
    "apimachinery/pkg/runtime",
];

pub const OUTPUT: &str = "crates/skiff-core/src/protobuf/messages.txt";

fn k8s_pb_dir(root: &Path) -> Result<PathBuf> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1"])
        .current_dir(root)
        .output()?;
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let pkg = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "k8s-pb")
        .context("k8s-pb is not in the dependency graph")?;
    Ok(Path::new(pkg["manifest_path"].as_str().unwrap())
        .parent()
        .unwrap()
        .join("src"))
}

struct Field {
    tag: u32,
    rust_name: String,
    kind: String,
}

/// `super::super::apimachinery::pkg::apis::meta::v1::ObjectMeta` seen from
/// module `api::core::v1` → `io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta`.
fn resolve(module: &[String], path: &str) -> String {
    let mut base = module.to_vec();
    let mut rest = path.trim().trim_start_matches("::");
    while let Some(r) = rest.strip_prefix("super::") {
        base.pop();
        rest = r;
    }
    let mut parts: Vec<String> = base;
    parts.extend(rest.split("::").map(str::to_owned));
    format!("io.k8s.{}", parts.join("."))
}

/// The innermost type name of `Option<X>`, `Vec<X>` or a map's value.
fn inner_type(ty: &str) -> String {
    let ty = ty.replace(' ', "");
    let ty = ty.trim_end_matches([',', '>']);
    ty.rsplit(['<', ',']).next().unwrap_or(ty).to_owned()
}

fn parse_module(
    file: &Path,
    module: &[String],
    out: &mut BTreeMap<String, Vec<Field>>,
) -> Result<()> {
    let text = std::fs::read_to_string(file)?;
    let mut lines = text.lines().map(str::trim).peekable();
    let mut current: Option<String> = None;
    while let Some(line) = lines.next() {
        if let Some(name) = line
            .strip_prefix("pub struct ")
            .and_then(|l| l.strip_suffix(" {"))
        {
            current = Some(format!("io.k8s.{}.{name}", module.join(".")));
            continue;
        }
        if line == "}" {
            current = None;
            continue;
        }
        let (Some(msg), Some(attr)) = (&current, line.strip_prefix("#[prost(")) else {
            continue;
        };
        let tag: u32 = attr
            .split("tag = \"")
            .nth(1)
            .and_then(|t| t.split('"').next())
            .context("tag")?
            .parse()?;
        let mut decl = String::new();
        for next in lines.by_ref() {
            decl.push_str(next);
            let open = decl.matches('<').count();
            if next.ends_with(',') && open == decl.matches('>').count() {
                break;
            }
        }
        let (name, ty) = decl
            .strip_prefix("pub ")
            .and_then(|d| d.split_once(':'))
            .context("field")?;
        let repeated = attr.contains("repeated");
        let scalar = attr.split([',', ')']).next().unwrap_or("").trim();
        let kind = if attr.starts_with("btree_map") {
            let value = attr
                .split('"')
                .nth(1)
                .unwrap_or("")
                .split(", ")
                .nth(1)
                .unwrap_or("")
                .to_owned();
            let value = if value == "message" {
                format!("message {}", resolve(module, &inner_type(ty)))
            } else {
                value
            };
            format!("map {value}")
        } else if scalar == "message" {
            format!("message {}", resolve(module, &inner_type(ty)))
        } else if scalar.starts_with("bytes") {
            "bytes".into()
        } else {
            scalar.to_owned()
        };
        let kind = if repeated {
            format!("repeated {kind}")
        } else {
            kind
        };
        out.entry(msg.clone()).or_default().push(Field {
            tag,
            rust_name: name.trim().trim_start_matches("r#").to_owned(),
            kind,
        });
    }
    Ok(())
}

fn walk(
    dir: &Path,
    module: &mut Vec<String>,
    out: &mut BTreeMap<String, Vec<Field>>,
) -> Result<()> {
    parse_module(&dir.join("mod.rs"), module, out)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "testapigroup" || name.contains("alpha") || name.contains("beta") {
                continue;
            }
            module.push(name);
            walk(&entry.path(), module, out)?;
            module.pop();
        }
    }
    Ok(())
}

/// The JSON name of a field: the schema property with the letters of
/// prost's `rust_name` (prost splits words and acronyms its own way:
/// `aPIGroup` → `a_pi_group`), else its lower camel case. A message field
/// with no property of its own is a Go embedded struct, inlined in JSON:
/// named `-`.
fn json_name(message: &str, field: &Field) -> String {
    let schemas = skiff_core::schema::schemas();
    // prost renames acronyms (TCPSocketAction → TcpSocketAction).
    let def = schemas
        .definitions
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(message))
        .map(|(_, d)| d);
    let props = def
        .and_then(|d| d.get("properties"))
        .and_then(|p| p.as_object());
    let letters = field.rust_name.replace('_', "");
    match props.and_then(|p| p.keys().find(|k| k.eq_ignore_ascii_case(&letters))) {
        Some(name) => name.clone(),
        None if props.is_some() && field.kind.starts_with("message ") => "-".into(),
        None => field.rust_name.to_lower_camel_case(),
    }
}

pub fn generate(root: &Path) -> Result<()> {
    let src = k8s_pb_dir(root)?;
    let mut messages = BTreeMap::new();
    for module in MODULES {
        let mut path: Vec<String> = module.split('/').map(str::to_owned).collect();
        walk(&src.join(module), &mut path, &mut messages)?;
    }
    if messages.len() < 100 {
        bail!(
            "only {} messages found under {}",
            messages.len(),
            src.display()
        );
    }
    let mut text = String::from("# Kubernetes protobuf fields: message, then `tag jsonName kind` per field\n# (jsonName `-`: an embedded struct, inlined in JSON).\n# Generated by `cargo xtask gen-protobuf` from the k8s-pb crate; do not edit.\n");
    for (message, fields) in &messages {
        writeln!(text, "\n{message}")?;
        for f in fields {
            writeln!(text, "{} {} {}", f.tag, json_name(message, f), f.kind)?;
        }
    }
    std::fs::create_dir_all(root.join(OUTPUT).parent().unwrap())?;
    std::fs::write(root.join(OUTPUT), text)?;
    eprintln!("wrote {} messages to {OUTPUT}", messages.len());
    Ok(())
}
