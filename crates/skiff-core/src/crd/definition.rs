//! A CustomResourceDefinition read from its JSON, and the checks it must
//! pass to be stored.

use serde_json::Value;

use crate::status::Cause;
use crate::validate::{is_dns_label, is_dns_subdomain};

/// What a definition declares.
#[derive(Clone, Debug)]
pub struct Definition {
    pub group: String,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    pub versions: Vec<Version>,
}

/// One version of a definition.
#[derive(Clone, Debug, PartialEq)]
pub struct Version {
    pub name: String,
    pub served: bool,
    pub storage: bool,
    /// Its `openAPIV3Schema`.
    pub schema: Value,
    /// A `/status` subresource.
    pub status: bool,
    pub scale: Option<Scale>,
    pub columns: Vec<Column>,
    /// Field paths lists and watches may select on (`spec.color`), from
    /// `selectableFields`.
    pub selectable: Vec<String>,
}

/// Where the `/scale` subresource reads and writes.
#[derive(Clone, Debug, PartialEq)]
pub struct Scale {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// An `additionalPrinterColumns` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub kind: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn texts(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl Definition {
    /// Reads a stored definition.
    pub fn parse(crd: &Value) -> Self {
        let spec = &crd["spec"];
        let names = &spec["names"];
        let kind = text(&names["kind"]);
        let versions = spec["versions"]
            .as_array()
            .map(|vs| vs.iter().map(Version::parse).collect())
            .unwrap_or_default();
        Self {
            group: text(&spec["group"]),
            list_kind: match names["listKind"].as_str() {
                Some(k) if !k.is_empty() => k.to_owned(),
                _ => format!("{kind}List"),
            },
            singular: match names["singular"].as_str() {
                Some(s) if !s.is_empty() => s.to_owned(),
                _ => kind.to_ascii_lowercase(),
            },
            kind,
            plural: text(&names["plural"]),
            short_names: texts(&names["shortNames"]),
            categories: texts(&names["categories"]),
            namespaced: spec["scope"] != "Cluster",
            versions,
        }
    }

    /// The names as accepted, for the definition's status.
    pub fn accepted_names(&self) -> Value {
        let mut names = serde_json::json!({
            "plural": self.plural,
            "singular": self.singular,
            "kind": self.kind,
            "listKind": self.list_kind,
        });
        if !self.short_names.is_empty() {
            names["shortNames"] = serde_json::json!(self.short_names);
        }
        if !self.categories.is_empty() {
            names["categories"] = serde_json::json!(self.categories);
        }
        names
    }
}

impl Version {
    fn parse(v: &Value) -> Self {
        let scale = &v["subresources"]["scale"];
        Self {
            name: text(&v["name"]),
            served: v["served"].as_bool().unwrap_or(false),
            storage: v["storage"].as_bool().unwrap_or(false),
            schema: v["schema"]["openAPIV3Schema"].clone(),
            status: v["subresources"]["status"].is_object(),
            scale: scale.is_object().then(|| Scale {
                spec_replicas: text(&scale["specReplicasPath"]),
                status_replicas: text(&scale["statusReplicasPath"]),
                label_selector: scale["labelSelectorPath"].as_str().map(str::to_owned),
            }),
            columns: v["additionalPrinterColumns"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .map(|c| Column {
                            name: text(&c["name"]),
                            kind: text(&c["type"]),
                            format: text(&c["format"]),
                            description: text(&c["description"]),
                            priority: c["priority"].as_i64().unwrap_or(0),
                            json_path: text(&c["jsonPath"]),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            selectable: v["selectableFields"]
                .as_array()
                .map(|fields| {
                    fields
                        .iter()
                        .filter_map(|f| f["jsonPath"].as_str())
                        .map(|p| p.trim_start_matches('.').to_owned())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

const COLUMN_TYPES: &[&str] = &["integer", "number", "string", "boolean", "date"];

/// Most selectable fields a version may declare.
const MAX_SELECTABLE: usize = 8;

/// Checks a version's `selectableFields`: simple paths to string,
/// boolean or integer fields of its schema, outside metadata, once each.
fn check_selectable(fields: &[Value], schema: &Value, at: &str, causes: &mut Vec<Cause>) {
    let mut seen: Vec<&str> = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        let field = format!("{at}[{i}].jsonPath");
        let path = f["jsonPath"].as_str().unwrap_or_default();
        if path.is_empty() {
            causes.push(Cause::required(field));
            continue;
        }
        let found = match schema_at(schema, path) {
            Ok(found) => found,
            Err(why) => {
                causes.push(Cause::invalid(
                    &field,
                    path,
                    format!("is an invalid path: {why}"),
                ));
                continue;
            }
        };
        if path.starts_with(".metadata.") || path == ".metadata" {
            causes.push(Cause::invalid(
                &field,
                path,
                "must not point to fields in metadata",
            ));
        }
        if !matches!(
            found["type"].as_str(),
            Some("string" | "boolean" | "integer")
        ) {
            causes.push(Cause::invalid(
                &field,
                path,
                "must point to a field of type string, boolean or integer. Enum string fields \
                 and strings with formats are allowed.",
            ));
        }
        if seen.contains(&path) {
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                field,
                message: format!("Duplicate value: {path:?}"),
            });
        } else {
            seen.push(path);
        }
    }
    if seen.len() > MAX_SELECTABLE {
        causes.push(Cause::too_many(at, seen.len(), MAX_SELECTABLE));
    }
}

/// The schema node a simple path (`.spec.color`) reaches.
fn schema_at<'s>(schema: &'s Value, path: &str) -> Result<&'s Value, String> {
    let Some(rest) = path.strip_prefix('.') else {
        return Err("must start with '.'".into());
    };
    rest.split('.').try_fold(schema, |node, name| {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "{name:?} is not a field name (array notation is not allowed)"
            ));
        }
        node["properties"]
            .get(name)
            .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))
            .ok_or_else(|| "does not refer to a valid field".to_owned())
    })
}

/// What is wrong with a definition (`old`: as stored, on an update), in
/// upstream's words.
pub fn check(crd: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let d = Definition::parse(crd);
    let spec = &crd["spec"];
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    if d.group.is_empty() {
        causes.push(Cause::required("spec.group"));
    } else if !is_dns_subdomain(&d.group) || !d.group.contains('.') {
        causes.push(Cause::invalid(
            "spec.group",
            &d.group,
            "should be a domain with at least one dot",
        ));
    }
    if name != format!("{}.{}", d.plural, d.group) {
        causes.push(Cause::invalid(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let names = &spec["names"];
    for (field, value) in [("plural", &d.plural), ("kind", &d.kind)] {
        if names[field].as_str().unwrap_or_default().is_empty() {
            causes.push(Cause::required(format!("spec.names.{field}")));
        } else if field == "plural" && !is_dns_label(value) {
            causes.push(Cause::invalid(
                "spec.names.plural",
                value,
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            ));
        }
    }
    if !d.singular.is_empty() && !is_dns_label(&d.singular) {
        causes.push(Cause::invalid(
            "spec.names.singular",
            &d.singular,
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
        ));
    }
    // What Skiff would otherwise accept and not do, it refuses.
    if let Some(strategy) = spec["conversion"]["strategy"]
        .as_str()
        .filter(|s| *s != "None")
    {
        causes.push(Cause::unsupported(
            "spec.conversion.strategy",
            strategy,
            &["None"],
        ));
    }
    if spec["preserveUnknownFields"] == true {
        causes.push(Cause::invalid(
            "spec.preserveUnknownFields",
            "true",
            "must be false",
        ));
    }
    match spec["scope"].as_str() {
        Some("Namespaced" | "Cluster") => {}
        Some(other) => causes.push(Cause::unsupported(
            "spec.scope",
            other,
            &["Cluster", "Namespaced"],
        )),
        None => causes.push(Cause::required("spec.scope")),
    }
    if d.versions.is_empty() {
        causes.push(Cause::required("spec.versions"));
        return causes;
    }
    if d.versions.iter().filter(|v| v.storage).count() != 1 {
        causes.push(Cause::invalid(
            "spec.versions",
            "",
            "must have exactly one version marked as storage version",
        ));
    }
    if !d.versions.iter().any(|v| v.served) {
        causes.push(Cause::invalid(
            "spec.versions",
            "",
            "must have at least one version marked as served",
        ));
    }
    for (i, v) in d.versions.iter().enumerate() {
        let at = format!("spec.versions[{i}]");
        if !is_dns_label(&v.name) {
            causes.push(Cause::invalid(
                format!("{at}.name"),
                &v.name,
                "must be a DNS label",
            ));
        }
        if d.versions[..i].iter().any(|o| o.name == v.name) {
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                field: format!("{at}.name"),
                message: format!("Duplicate value: {:?}", v.name),
            });
        }
        if v.schema.is_null() {
            causes.push(Cause {
                reason: "FieldValueRequired",
                field: format!("{at}.schema.openAPIV3Schema"),
                message: "Required value: schemas are required".into(),
            });
        } else {
            let stored = old.and_then(|o| o["spec"]["versions"].as_array());
            let unchanged = stored.into_iter().flatten().any(|o| {
                o["name"] == v.name.as_str() && o["schema"]["openAPIV3Schema"] == v.schema
            });
            super::structural::check_root(
                &v.schema,
                &format!("{at}.schema.openAPIV3Schema"),
                !unchanged,
                &mut causes,
            );
        }
        if let Some(fields) = crd["spec"]["versions"][i]["selectableFields"].as_array() {
            check_selectable(
                fields,
                &v.schema,
                &format!("{at}.selectableFields"),
                &mut causes,
            );
        }
        if let Some(scale) = &v.scale {
            for (field, path) in [
                ("specReplicasPath", &scale.spec_replicas),
                ("statusReplicasPath", &scale.status_replicas),
            ] {
                if !path.starts_with('.') || path.len() < 2 {
                    causes.push(Cause::invalid(
                        format!("{at}.subresources.scale.{field}"),
                        path,
                        "should be a json path under either .spec or .status",
                    ));
                }
            }
        }
        for (j, c) in v.columns.iter().enumerate() {
            let at = format!("{at}.additionalPrinterColumns[{j}]");
            if c.name.is_empty() {
                causes.push(Cause::required(format!("{at}.name")));
            }
            if !COLUMN_TYPES.contains(&c.kind.as_str()) {
                causes.push(Cause::unsupported(
                    format!("{at}.type"),
                    &c.kind,
                    COLUMN_TYPES,
                ));
            }
            if c.json_path.is_empty() {
                causes.push(Cause::required(format!("{at}.jsonPath")));
            } else if super::columns::Path::parse(&c.json_path).is_none() {
                causes.push(Cause::invalid(
                    format!("{at}.jsonPath"),
                    &c.json_path,
                    "must be a simple json path",
                ));
            }
        }
    }
    causes
}

/// The fields of a dotted path (`.spec.replicas`).
fn fields(path: &str) -> impl Iterator<Item = &str> {
    path.split('.').filter(|f| !f.is_empty())
}

impl Scale {
    /// The desired replicas, the current ones and the selector.
    pub fn read(&self, obj: &Value) -> (i64, i64, String) {
        let at = |path: &str| fields(path).try_fold(obj, |o, f| o.get(f));
        let replicas = |path: &str| at(path).and_then(Value::as_i64).unwrap_or(0);
        let selector = self
            .label_selector
            .as_deref()
            .and_then(at)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        (
            replicas(&self.spec_replicas),
            replicas(&self.status_replicas),
            selector,
        )
    }

    /// Sets the desired replicas.
    pub fn write(&self, obj: &mut Value, replicas: i64) {
        let mut at = obj;
        for f in fields(&self.spec_replicas) {
            if !at.is_object() {
                *at = Value::Object(Default::default());
            }
            at = &mut at[f];
        }
        *at = Value::from(replicas);
    }
}
