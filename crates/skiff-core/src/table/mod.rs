//! `meta.k8s.io/v1 Table` output: the columns kubectl prints for each kind.

mod project;

use serde_json::{json, Value};

use crate::meta;
use crate::registry::ResourceType;
use project::Keep;

/// One column: name, type, priority (`-o wide` shows priority 1).
type Column = (&'static str, &'static str, u8);

fn columns(kind: &str) -> &'static [Column] {
    match kind {
        "Pod" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        "Deployment" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "ReplicaSet" | "ReplicationController" => &[
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "StatefulSet" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
        ],
        "DaemonSet" => &[
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "Service" => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        "Node" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        "Namespace" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Age", "string", 0),
        ],
        "ConfigMap" => &[
            ("Name", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        "Secret" => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        "Event" => &[
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Subobject", "string", 1),
            ("Source", "string", 1),
            ("Message", "string", 0),
            ("First Seen", "string", 1),
            ("Count", "string", 1),
            ("Name", "string", 1),
        ],
        "Job" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Duration", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "HorizontalPodAutoscaler" => &[
            ("Name", "string", 0),
            ("Reference", "string", 0),
            ("Targets", "string", 0),
            ("MinPods", "string", 0),
            ("MaxPods", "integer", 0),
            ("Replicas", "integer", 0),
            ("Age", "string", 0),
        ],
        "PodDisruptionBudget" => &[
            ("Name", "string", 0),
            ("Min Available", "string", 0),
            ("Max Unavailable", "string", 0),
            ("Allowed Disruptions", "integer", 0),
            ("Age", "string", 0),
        ],
        "CronJob" => &[
            ("Name", "string", 0),
            ("Schedule", "string", 0),
            ("Timezone", "string", 0),
            ("Suspend", "boolean", 0),
            ("Active", "integer", 0),
            ("Last Schedule", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "Endpoints" => &[
            ("Name", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ],
        "ComponentStatus" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Message", "string", 0),
            ("Error", "string", 0),
        ],
        "APIService" => &[
            ("Name", "string", 0),
            ("Service", "string", 0),
            ("Available", "string", 0),
            ("Age", "string", 0),
        ],
        "ServiceAccount" => &[
            ("Name", "string", 0),
            ("Secrets", "string", 0),
            ("Age", "string", 0),
        ],
        "CSINode" => &[
            ("Name", "string", 0),
            ("Drivers", "integer", 0),
            ("Age", "string", 0),
        ],
        "PersistentVolumeClaim" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Volume", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Age", "string", 0),
            ("VolumeMode", "string", 1),
        ],
        "PersistentVolume" => &[
            ("Name", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("Reclaim Policy", "string", 0),
            ("Status", "string", 0),
            ("Claim", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Reason", "string", 0),
            ("Age", "string", 0),
            ("VolumeMode", "string", 1),
        ],
        "StorageClass" => &[
            ("Name", "string", 0),
            ("Provisioner", "string", 0),
            ("ReclaimPolicy", "string", 0),
            ("VolumeBindingMode", "string", 0),
            ("AllowVolumeExpansion", "string", 0),
            ("Age", "string", 0),
        ],
        "CertificateSigningRequest" => &[
            ("Name", "string", 0),
            ("Age", "string", 0),
            ("SignerName", "string", 0),
            ("Requestor", "string", 0),
            ("RequestedDuration", "string", 0),
            ("Condition", "string", 0),
        ],
        "Lease" => &[
            ("Name", "string", 0),
            ("Holder", "string", 0),
            ("Age", "string", 0),
        ],
        "RuntimeClass" => &[
            ("Name", "string", 0),
            ("Handler", "string", 0),
            ("Age", "string", 0),
        ],
        "PriorityClass" => &[
            ("Name", "string", 0),
            ("Value", "integer", 0),
            ("Global-Default", "boolean", 0),
            ("Age", "string", 0),
            ("PreemptionPolicy", "string", 0),
        ],
        "ResourceQuota" => &[
            ("Name", "string", 0),
            ("Request", "string", 0),
            ("Limit", "string", 0),
            ("Age", "string", 0),
        ],
        "ControllerRevision" => &[
            ("Name", "string", 0),
            ("Controller", "string", 0),
            ("Revision", "string", 0),
            ("Age", "string", 0),
        ],
        "Ingress" => &[
            ("Name", "string", 0),
            ("Class", "string", 0),
            ("Hosts", "string", 0),
            ("Address", "string", 0),
            ("Ports", "string", 0),
            ("Age", "string", 0),
        ],
        "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => &[
            ("Name", "string", 0),
            ("Webhooks", "integer", 0),
            ("Age", "string", 0),
        ],
        "IngressClass" => &[
            ("Name", "string", 0),
            ("Controller", "string", 0),
            ("Parameters", "string", 0),
            ("Age", "string", 0),
        ],
        "NetworkPolicy" => &[
            ("Name", "string", 0),
            ("Pod-Selector", "string", 0),
            ("Age", "string", 0),
        ],
        "RoleBinding" | "ClusterRoleBinding" => &[
            ("Name", "string", 0),
            ("Role", "string", 0),
            ("Age", "string", 0),
            ("Users", "string", 1),
            ("Groups", "string", 1),
            ("ServiceAccounts", "string", 1),
        ],
        // Upstream's default table, where a kind has no printer of its own.
        "Role" | "ClusterRole" | "LimitRange" | "CustomResourceDefinition" => {
            &[("Name", "string", 0), ("Created At", "date", 0)]
        }
        "ValidatingAdmissionPolicy" => &[
            ("Name", "string", 0),
            ("Validations", "integer", 0),
            ("ParamKind", "string", 0),
            ("Age", "string", 0),
        ],
        "ValidatingAdmissionPolicyBinding" => &[
            ("Name", "string", 0),
            ("PolicyName", "string", 0),
            ("ParamRef", "string", 0),
            ("Age", "string", 0),
        ],
        "VolumeAttributesClass" => &[
            ("Name", "string", 0),
            ("DriverName", "string", 0),
            ("Age", "string", 0),
        ],
        "CSIDriver" => &[
            ("Name", "string", 0),
            ("AttachRequired", "boolean", 0),
            ("PodInfoOnMount", "boolean", 0),
            ("StorageCapacity", "boolean", 0),
            ("TokenRequests", "string", 0),
            ("RequiresRepublish", "boolean", 0),
            ("Modes", "string", 0),
            ("Age", "string", 0),
        ],
        // Upstream prints no age for a pod template.
        "PodTemplate" => &[
            ("Name", "string", 0),
            ("Containers", "string", 0),
            ("Images", "string", 0),
            ("Pod Labels", "string", 0),
        ],
        "Scale" => &[
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
        ],
        "EndpointSlice" => &[
            ("Name", "string", 0),
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ],
        _ => &[("Name", "string", 0), ("Age", "string", 0)],
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn or_none(v: String) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v
    }
}

/// Upstream's `HumanDuration` of the time since an RFC 3339 timestamp.
pub fn age(timestamp: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(timestamp) else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    human_duration(secs)
}

pub fn human_duration(secs: i64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    match () {
        _ if secs < 120 => format!("{secs}s"),
        _ if m < 10 => match secs % 60 {
            0 => format!("{m}m"),
            s => format!("{m}m{s}s"),
        },
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 => match m % 60 {
            0 => format!("{h}h"),
            mm => format!("{h}h{mm}m"),
        },
        _ if h < 48 => format!("{h}h"),
        _ if h < 192 => match h % 24 {
            0 => format!("{d}d"),
            hh => format!("{d}d{hh}h"),
        },
        _ if d < 730 => format!("{d}d"),
        _ if d < 2920 => match d % 365 {
            0 => format!("{}y", d / 365),
            dd => format!("{}y{dd}d", d / 365),
        },
        _ => format!("{}y", d / 365),
    }
}

/// A quota's REQUEST and LIMIT cells: `resource: used/hard` for each
/// resource it holds, by name, limits apart.
fn quota_usage(status: &Value) -> (String, String) {
    let hard = status["hard"].as_object().cloned().unwrap_or_default();
    let mut names: Vec<&String> = hard.keys().collect();
    names.sort();
    let (mut requests, mut limits) = (Vec::new(), Vec::new());
    for r in names {
        let used = status["used"][r].as_str().unwrap_or("0");
        let cell = format!("{r}: {used}/{}", s(&hard[r]));
        match r.split_once('.') {
            Some(("limits", _)) => limits.push(cell),
            _ => requests.push(cell),
        }
    }
    (requests.join(", "), limits.join(", "))
}

/// The controller owning `o` as `kind.group/name` in lower case, or
/// `<none>`.
fn controller_of(o: &Value) -> String {
    let owners = list(&o["metadata"]["ownerReferences"]);
    let Some(owner) = owners.iter().find(|r| r["controller"] == true) else {
        return "<none>".into();
    };
    let group = s(&owner["apiVersion"])
        .rsplit_once('/')
        .map(|(g, _)| g.to_owned());
    let kind = match group {
        Some(g) => format!("{}.{g}", s(&owner["kind"])),
        None => s(&owner["kind"]),
    };
    format!("{}/{}", kind.to_lowercase(), s(&owner["name"]))
}

/// An Ingress's hosts: the first three named, `*` when none is.
fn ingress_hosts(rules: &[Value]) -> String {
    let mut named = Vec::new();
    let mut more = false;
    for rule in rules {
        if named.len() == 3 {
            more = true;
            break;
        }
        named.extend(rule["host"].as_str().filter(|h| !h.is_empty()));
    }
    match (named.is_empty(), more) {
        (true, _) => "*".into(),
        (false, true) => format!("{} + {} more...", named.join(","), rules.len() - 3),
        (false, false) => named.join(","),
    }
}

/// The addresses a load balancer gives an Ingress, each once, sorted.
fn ingress_address(lb: &Value) -> String {
    let points = list(&lb["ingress"]);
    let mut addresses: Vec<String> = points
        .iter()
        .map(|p| {
            p["ip"]
                .as_str()
                .filter(|ip| !ip.is_empty())
                .map_or_else(|| s(&p["hostname"]), str::to_owned)
        })
        .filter(|a| !a.is_empty())
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses.join(",")
}

/// A claim's or volume's phase, or `Terminating` once it is being deleted.
fn phase_or_terminating(o: &Value) -> String {
    match meta::is_deleting(o) {
        true => "Terminating".into(),
        false => s(&o["status"]["phase"]),
    }
}

/// Access modes as kubectl abbreviates them.
fn access_modes(modes: &Value) -> String {
    join(
        modes
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| match m.as_str() {
                Some("ReadWriteOnce") => "RWO".to_string(),
                Some("ReadOnlyMany") => "ROX".into(),
                Some("ReadWriteMany") => "RWX".into(),
                Some("ReadWriteOncePod") => "RWOP".into(),
                _ => s(m),
            }),
    )
}

fn or_unset(v: String) -> String {
    if v.is_empty() {
        "<unset>".into()
    } else {
        v
    }
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(",")
}

fn containers(spec: &Value) -> (String, String) {
    let list = spec["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    (
        join(list.iter().map(|c| s(&c["name"]))),
        join(list.iter().map(|c| s(&c["image"]))),
    )
}

/// A label selector, or a ReplicationController's map of equalities.
fn selector(sel: &Value) -> String {
    let structured = sel.get("matchLabels").is_some() || sel.get("matchExpressions").is_some();
    match sel.as_object() {
        Some(map) if !structured => or_none(
            map.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => or_none(crate::selector::format_object(sel)),
    }
}

/// A pod's READY, STATUS and RESTARTS cells, as upstream's printPod
/// works them out: init progress (`Init:1/2`, `Init:Error`) until the pod
/// is initialized, then the first container with a reason; sidecars
/// count among the containers; restarts with how long ago the last was.
fn pod_summary(pod: &Value) -> (String, String, String) {
    let (spec, status) = (&pod["spec"], &pod["status"]);
    let init_specs = list(&spec["initContainers"]);
    let sidecar = |name: &Value| {
        init_specs
            .iter()
            .any(|c| &c["name"] == name && c["restartPolicy"] == "Always")
    };
    let sidecars = init_specs.iter().filter(|c| c["restartPolicy"] == "Always");
    let total = list(&spec["containers"]).len() + sidecars.count();
    let mut ready = 0;
    let mut reason = match status["reason"].as_str() {
        Some(r) if !r.is_empty() => r.to_owned(),
        _ => or_none(s(&status["phase"])).replace("<none>", "Pending"),
    };
    let gated = list(&status["conditions"])
        .iter()
        .any(|c| c["type"] == "PodScheduled" && c["reason"] == "SchedulingGated");
    if gated {
        reason = "SchedulingGated".into();
    }
    let finished = |c: &Value| {
        c["lastState"]["terminated"]["finishedAt"]
            .as_str()
            .map(str::to_owned)
    };
    let (mut restarts, mut last) = (0, None::<String>);
    let (mut sidecar_restarts, mut sidecar_last) = (0, None::<String>);
    let mut initializing = false;
    for (i, c) in list(&status["initContainerStatuses"]).iter().enumerate() {
        restarts += int(&c["restartCount"]);
        last = last.max(finished(c));
        let is_sidecar = sidecar(&c["name"]);
        if is_sidecar {
            sidecar_restarts += int(&c["restartCount"]);
            sidecar_last = sidecar_last.max(finished(c));
        }
        let (terminated, waiting) = (&c["state"]["terminated"], &c["state"]["waiting"]);
        if terminated.is_object() && int(&terminated["exitCode"]) == 0 {
            continue;
        }
        if is_sidecar && c["started"] == true {
            ready += usize::from(c["ready"] == true);
            continue;
        }
        reason = if terminated.is_object() {
            match terminated["reason"].as_str().filter(|r| !r.is_empty()) {
                Some(r) => format!("Init:{r}"),
                None if int(&terminated["signal"]) != 0 => {
                    format!("Init:Signal:{}", int(&terminated["signal"]))
                }
                None => format!("Init:ExitCode:{}", int(&terminated["exitCode"])),
            }
        } else {
            match waiting["reason"]
                .as_str()
                .filter(|r| !r.is_empty() && *r != "PodInitializing")
            {
                Some(r) => format!("Init:{r}"),
                None => format!("Init:{i}/{}", init_specs.len()),
            }
        };
        initializing = true;
        break;
    }
    let initialized = list(&status["conditions"])
        .iter()
        .any(|c| c["type"] == "Initialized" && c["status"] == "True");
    if !initializing || initialized {
        (restarts, last) = (sidecar_restarts, sidecar_last);
        let mut running = false;
        for c in list(&status["containerStatuses"]).iter().rev() {
            restarts += int(&c["restartCount"]);
            last = last.max(finished(c));
            let (terminated, waiting) = (&c["state"]["terminated"], &c["state"]["waiting"]);
            if let Some(r) = waiting["reason"].as_str().filter(|r| !r.is_empty()) {
                reason = r.into();
            } else if let Some(r) = terminated["reason"].as_str().filter(|r| !r.is_empty()) {
                reason = r.into();
            } else if terminated.is_object() {
                reason = match int(&terminated["signal"]) {
                    0 => format!("ExitCode:{}", int(&terminated["exitCode"])),
                    signal => format!("Signal:{signal}"),
                };
            } else if c["ready"] == true && c["state"]["running"].is_object() {
                running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && running {
            let pod_ready = list(&status["conditions"])
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.into();
        }
    }
    let terminal = matches!(status["phase"].as_str(), Some("Succeeded" | "Failed"));
    if meta::is_deleting(pod) && status["reason"] == "NodeLost" {
        reason = "Unknown".into();
    } else if meta::is_deleting(pod) && !terminal {
        reason = "Terminating".into();
    }
    let restarts = match last.filter(|_| restarts != 0) {
        Some(at) => format!("{restarts} ({} ago)", age(&at)),
        None => restarts.to_string(),
    };
    (format!("{ready}/{total}"), reason, restarts)
}

/// The items of a list, none if it is no list.
fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// How many of the pod's readiness gates hold, as `true/all`.
fn readiness_gates(pod: &Value) -> String {
    let gates = pod["spec"]["readinessGates"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if gates.is_empty() {
        return "<none>".into();
    }
    let conditions = pod["status"]["conditions"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let holding = gates
        .iter()
        .filter(|g| {
            conditions
                .iter()
                .find(|c| c["type"] == g["conditionType"])
                .is_some_and(|c| c["status"] == "True")
        })
        .count();
    format!("{holding}/{}", gates.len())
}

fn cells(kind: &str, o: &Value) -> Vec<Value> {
    let name = json!(meta::name(o));
    let created = json!(meta::get_str(o, "creationTimestamp").map_or("<unknown>".into(), age));
    let (spec, status) = (&o["spec"], &o["status"]);
    match kind {
        "Pod" => {
            let (ready, reason, restarts) = pod_summary(o);
            let ip = status["podIPs"][0]["ip"]
                .as_str()
                .or(status["podIP"].as_str());
            vec![
                name,
                json!(ready),
                json!(reason),
                json!(restarts),
                created,
                json!(or_none(ip.unwrap_or_default().to_owned())),
                json!(or_none(s(&spec["nodeName"]))),
                json!(or_none(s(&status["nominatedNodeName"]))),
                json!(readiness_gates(o)),
            ]
        }
        "Deployment" => {
            let (c, i) = containers(&spec["template"]["spec"]);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(&status["readyReplicas"]),
                    int(&spec["replicas"])
                )),
                json!(int(&status["updatedReplicas"])),
                json!(int(&status["availableReplicas"])),
                created,
                json!(c),
                json!(i),
                json!(selector(&spec["selector"])),
            ]
        }
        "ReplicaSet" | "ReplicationController" => {
            let (c, i) = containers(&spec["template"]["spec"]);
            vec![
                name,
                json!(int(&spec["replicas"])),
                json!(int(&status["replicas"])),
                json!(int(&status["readyReplicas"])),
                created,
                json!(c),
                json!(i),
                json!(selector(&spec["selector"])),
            ]
        }
        "StatefulSet" => {
            let (c, i) = containers(&spec["template"]["spec"]);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(&status["readyReplicas"]),
                    int(&spec["replicas"])
                )),
                created,
                json!(c),
                json!(i),
            ]
        }
        "DaemonSet" => {
            let (c, i) = containers(&spec["template"]["spec"]);
            let ns = join(
                spec["template"]["spec"]["nodeSelector"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", s(v))),
            );
            vec![
                name,
                json!(int(&status["desiredNumberScheduled"])),
                json!(int(&status["currentNumberScheduled"])),
                json!(int(&status["numberReady"])),
                json!(int(&status["updatedNumberScheduled"])),
                json!(int(&status["numberAvailable"])),
                json!(or_none(ns)),
                created,
                json!(c),
                json!(i),
                json!(selector(&spec["selector"])),
            ]
        }
        "Service" => {
            let ports = join(spec["ports"].as_array().into_iter().flatten().map(|p| {
                match p["nodePort"].as_i64() {
                    Some(np) => format!("{}:{np}/{}", int(&p["port"]), s(&p["protocol"])),
                    None => format!("{}/{}", int(&p["port"]), s(&p["protocol"])),
                }
            }));
            // As upstream's printer: a balancer's addresses (pending until
            // it has some), then the Service's own external IPs; an
            // ExternalName Service's name.
            let ingress = status["loadBalancer"]["ingress"].as_array().into_iter();
            let balancer = ingress.flatten().map(|i| match i["ip"].as_str() {
                Some(ip) if !ip.is_empty() => ip.to_owned(),
                _ => s(&i["hostname"]),
            });
            let own = spec["externalIPs"].as_array().into_iter().flatten().map(s);
            let external = match spec["type"].as_str().unwrap_or_default() {
                "ClusterIP" | "NodePort" => or_none(join(own)),
                "LoadBalancer" => match join(balancer.chain(own)) {
                    all if all.is_empty() => "<pending>".into(),
                    all => all,
                },
                "ExternalName" => s(&spec["externalName"]),
                _ => "<unknown>".into(),
            };
            let sel = join(
                spec["selector"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", s(v))),
            );
            vec![
                name,
                json!(s(&spec["type"])),
                json!(or_none(s(&spec["clusterIP"]))),
                json!(external),
                json!(or_none(ports)),
                created,
                json!(or_none(sel)),
            ]
        }
        "Node" => {
            let ready = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready");
            let mut st = match ready.map(|c| s(&c["status"])) {
                Some(x) if x == "True" => "Ready".to_string(),
                Some(_) => "NotReady".to_string(),
                None => "Unknown".to_string(),
            };
            if spec["unschedulable"] == true {
                st.push_str(",SchedulingDisabled");
            }
            let roles = join(meta::labels(o).filter_map(|(k, _)| {
                k.strip_prefix("node-role.kubernetes.io/")
                    .map(str::to_owned)
            }));
            let addr = |t: &str| {
                or_none(join(
                    status["addresses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|a| a["type"] == t)
                        .map(|a| s(&a["address"])),
                ))
            };
            let info = &status["nodeInfo"];
            vec![
                name,
                json!(st),
                json!(or_none(roles)),
                created,
                json!(s(&info["kubeletVersion"])),
                json!(addr("InternalIP")),
                json!(addr("ExternalIP")),
                json!(s(&info["osImage"])),
                json!(s(&info["kernelVersion"])),
                json!(s(&info["containerRuntimeVersion"])),
            ]
        }
        "Namespace" => vec![name, json!(s(&status["phase"])), created],
        "ConfigMap" => {
            let n = o["data"].as_object().map_or(0, |m| m.len())
                + o["binaryData"].as_object().map_or(0, |m| m.len());
            vec![name, json!(n), created]
        }
        "Secret" => vec![
            name,
            json!(s(&o["type"])),
            json!(o["data"].as_object().map_or(0, |m| m.len())),
            created,
        ],
        "Event" => event_cells(o),
        "Job" => {
            let conds = status["conditions"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let has = |t: &str| {
                conds
                    .iter()
                    .any(|c| c["type"] == t && c["status"] == "True")
            };
            let st = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if has("Suspended") {
                "Suspended"
            } else {
                "Running"
            };
            let duration = match (
                status["startTime"].as_str(),
                status["completionTime"].as_str(),
            ) {
                (Some(a), Some(b)) => match (
                    chrono::DateTime::parse_from_rfc3339(a),
                    chrono::DateTime::parse_from_rfc3339(b),
                ) {
                    (Ok(a), Ok(b)) => human_duration((b - a).num_seconds()),
                    _ => String::new(),
                },
                (Some(a), None) => age(a),
                _ => String::new(),
            };
            let (c, i) = containers(&spec["template"]["spec"]);
            vec![
                name,
                json!(st),
                json!(format!(
                    "{}/{}",
                    int(&status["succeeded"]),
                    int(&spec["completions"])
                )),
                json!(duration),
                created,
                json!(c),
                json!(i),
                json!(selector(&spec["selector"])),
            ]
        }
        "HorizontalPodAutoscaler" => {
            let v2;
            let o = if o["apiVersion"] == "autoscaling/v1" {
                v2 = crate::autoscaling::to_v2(o);
                &v2
            } else {
                o
            };
            let (spec, status) = (&o["spec"], &o["status"]);
            let target = &spec["scaleTargetRef"];
            vec![
                name,
                json!(format!("{}/{}", s(&target["kind"]), s(&target["name"]))),
                json!(hpa_targets(&spec["metrics"], &status["currentMetrics"])),
                json!(spec["minReplicas"]
                    .as_i64()
                    .map_or("<unset>".into(), |n| n.to_string())),
                json!(int(&spec["maxReplicas"])),
                json!(int(&status["currentReplicas"])),
                created,
            ]
        }
        "PodDisruptionBudget" => {
            let either = |v: &Value| match v {
                Value::Null => "N/A".to_owned(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            vec![
                name,
                json!(either(&spec["minAvailable"])),
                json!(either(&spec["maxUnavailable"])),
                json!(int(&status["disruptionsAllowed"])),
                created,
            ]
        }
        "CronJob" => {
            let job = &spec["jobTemplate"]["spec"];
            let (c, i) = containers(&job["template"]["spec"]);
            vec![
                name,
                json!(s(&spec["schedule"])),
                json!(spec["timeZone"].as_str().unwrap_or("<none>")),
                json!(spec["suspend"] == true),
                json!(status["active"].as_array().map_or(0, Vec::len)),
                json!(status["lastScheduleTime"]
                    .as_str()
                    .map_or("<none>".into(), age)),
                created,
                json!(c),
                json!(i),
                json!(selector(&job["selector"])),
            ]
        }
        "Endpoints" => {
            let eps: Vec<String> = o["subsets"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|ss| {
                    let ports: Vec<i64> = ss["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| int(&p["port"]))
                        .collect();
                    ss["addresses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(move |a| {
                            let ip = s(&a["ip"]);
                            let ports = ports.clone();
                            if ports.is_empty() {
                                vec![ip]
                            } else {
                                ports.into_iter().map(|p| format!("{ip}:{p}")).collect()
                            }
                        })
                })
                .collect();
            vec![name, json!(or_none(eps.join(","))), created]
        }
        "ComponentStatus" => {
            let healthy = o["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Healthy");
            let ok = healthy.is_some_and(|c| c["status"] == "True");
            let message = healthy.and_then(|c| c["message"].as_str()).unwrap_or("");
            vec![
                name,
                json!(if ok { "Healthy" } else { "Unhealthy" }),
                json!(if ok { message } else { "" }),
                json!(if ok { "" } else { message }),
            ]
        }
        "APIService" => {
            let available = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Available");
            let service = match spec["service"]["name"].as_str() {
                Some(n) => format!("{}/{n}", s(&spec["service"]["namespace"])),
                None => "Local".into(),
            };
            vec![
                name,
                json!(service),
                json!(available.map_or("Unknown".into(), |c| s(&c["status"]).to_owned())),
                json!(meta::get_str(o, "creationTimestamp").map_or("<unknown>".into(), age)),
            ]
        }
        "ServiceAccount" => vec![
            name,
            json!(o["secrets"].as_array().map_or(0, Vec::len).to_string()),
            created,
        ],
        "CSINode" => vec![
            name,
            json!(spec["drivers"].as_array().map_or(0, Vec::len)),
            created,
        ],
        "PersistentVolumeClaim" => vec![
            name,
            json!(phase_or_terminating(o)),
            json!(s(&spec["volumeName"])),
            json!(s(&status["capacity"]["storage"])),
            json!(access_modes(&status["accessModes"])),
            json!(s(&spec["storageClassName"])),
            json!(or_unset(s(&spec["volumeAttributesClassName"]))),
            created,
            json!(s(&spec["volumeMode"])),
        ],
        "PersistentVolume" => {
            let r = &spec["claimRef"];
            let claim = match r["name"].as_str() {
                Some(n) => format!("{}/{n}", s(&r["namespace"])),
                None => String::new(),
            };
            vec![
                name,
                json!(s(&spec["capacity"]["storage"])),
                json!(access_modes(&spec["accessModes"])),
                json!(s(&spec["persistentVolumeReclaimPolicy"])),
                json!(phase_or_terminating(o)),
                json!(claim),
                json!(s(&spec["storageClassName"])),
                json!(or_unset(s(&spec["volumeAttributesClassName"]))),
                json!(s(&status["reason"])),
                created,
                json!(s(&spec["volumeMode"])),
            ]
        }
        "StorageClass" => {
            let default = meta::get(o, "annotations")
                .is_some_and(|a| a["storageclass.kubernetes.io/is-default-class"] == "true");
            let name = match default {
                true => json!(format!("{} (default)", meta::name(o))),
                false => name,
            };
            vec![
                name,
                json!(s(&o["provisioner"])),
                json!(s(&o["reclaimPolicy"])),
                json!(s(&o["volumeBindingMode"])),
                json!(o["allowVolumeExpansion"] == true),
                created,
            ]
        }
        "Lease" => vec![name, json!(or_none(s(&spec["holderIdentity"]))), created],
        "RuntimeClass" => vec![name, json!(s(&o["handler"])), created],
        "PriorityClass" => vec![
            name,
            json!(int(&o["value"])),
            json!(o["globalDefault"] == true),
            created,
            json!(s(&o["preemptionPolicy"])),
        ],
        "ResourceQuota" => {
            let (requests, limits) = quota_usage(status);
            vec![name, json!(requests), json!(limits), created]
        }
        "ControllerRevision" => {
            vec![
                name,
                json!(controller_of(o)),
                json!(int(&o["revision"])),
                created,
            ]
        }
        "Ingress" => {
            let plain = list(&spec["tls"]).is_empty();
            vec![
                name,
                json!(or_none(s(&spec["ingressClassName"]))),
                json!(ingress_hosts(list(&spec["rules"]))),
                json!(ingress_address(&status["loadBalancer"])),
                json!(if plain { "80" } else { "80, 443" }),
                created,
            ]
        }
        "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => {
            let count = o["webhooks"].as_array().map_or(0, Vec::len);
            vec![name, json!(count), created]
        }
        "ValidatingAdmissionPolicy" => {
            let count = spec["validations"].as_array().map_or(0, Vec::len);
            let kind = &spec["paramKind"];
            let param_kind = if kind.is_object() {
                format!("{}/{}", s(&kind["apiVersion"]), s(&kind["kind"]))
            } else {
                "<unset>".to_owned()
            };
            vec![name, json!(count), json!(param_kind), created]
        }
        "ValidatingAdmissionPolicyBinding" => {
            let r = &spec["paramRef"];
            // Without a namespace, the parameter's scope is not known here.
            let param_ref = match (r["name"].as_str(), r["namespace"].as_str()) {
                (Some(n), Some(ns)) if !n.is_empty() && !ns.is_empty() => format!("{ns}/{n}"),
                (Some(n), _) if !n.is_empty() => format!("*/{n}"),
                _ if r["selector"].is_object() => crate::selector::format_object(&r["selector"]),
                _ => "<unset>".to_owned(),
            };
            vec![
                name,
                json!(s(&spec["policyName"])),
                json!(param_ref),
                created,
            ]
        }
        "IngressClass" => {
            let p = &spec["parameters"];
            let parameters = match (p["kind"].as_str(), p["apiGroup"].as_str()) {
                (None, _) => "<none>".to_owned(),
                (Some(kind), Some(group)) => format!("{kind}.{group}/{}", s(&p["name"])),
                (Some(kind), None) => format!("{kind}/{}", s(&p["name"])),
            };
            vec![
                name,
                json!(s(&spec["controller"])),
                json!(parameters),
                created,
            ]
        }
        "NetworkPolicy" => vec![name, json!(selector(&spec["podSelector"])), created],
        "RoleBinding" | "ClusterRoleBinding" => {
            let role = &o["roleRef"];
            let subjects = list(&o["subjects"]);
            let named = |kind: &str| {
                let of_kind = subjects.iter().filter(|x| x["kind"] == kind);
                let shown = of_kind.map(|x| match kind {
                    "ServiceAccount" => format!("{}/{}", s(&x["namespace"]), s(&x["name"])),
                    _ => s(&x["name"]),
                });
                json!(shown.collect::<Vec<_>>().join(", "))
            };
            vec![
                name,
                json!(format!("{}/{}", s(&role["kind"]), s(&role["name"]))),
                created,
                named("User"),
                named("Group"),
                named("ServiceAccount"),
            ]
        }
        "Role" | "ClusterRole" | "LimitRange" | "CustomResourceDefinition" => {
            vec![
                name,
                json!(meta::get_str(o, "creationTimestamp").unwrap_or_default()),
            ]
        }
        "CertificateSigningRequest" => {
            let mut conditions: Vec<String> = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["type"].as_str().map(str::to_owned))
                .collect();
            if !status["certificate"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
            {
                conditions.push("Issued".into());
            }
            let duration = spec["expirationSeconds"]
                .as_i64()
                .map_or("<none>".into(), human_duration);
            vec![
                name,
                created,
                json!(s(&spec["signerName"])),
                json!(s(&spec["username"])),
                json!(duration),
                json!(if conditions.is_empty() {
                    "Pending".into()
                } else {
                    conditions.join(",")
                }),
            ]
        }
        "EndpointSlice" => {
            let ports = o["ports"].as_array().into_iter().flatten().map(|p| {
                match (p["port"].as_i64(), p["name"].as_str()) {
                    (Some(n), _) => n.to_string(),
                    (None, Some(name)) => name.to_owned(),
                    (None, None) => "*".to_owned(),
                }
            });
            let addresses = o["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| e["addresses"].as_array().into_iter().flatten().map(s));
            vec![
                name,
                json!(s(&o["addressType"])),
                json!(first_three(ports)),
                json!(first_three(addresses)),
                created,
            ]
        }
        "VolumeAttributesClass" => vec![name, json!(s(&o["driverName"])), created],
        "CSIDriver" => {
            let flag = |key: &str, unset: bool| json!(spec[key].as_bool().unwrap_or(unset));
            let requests = spec["tokenRequests"].as_array();
            let audiences = requests.map_or("<unset>".to_owned(), |r| {
                join(r.iter().map(|t| s(&t["audience"])))
            });
            let modes = spec["volumeLifecycleModes"]
                .as_array()
                .into_iter()
                .flatten();
            vec![
                name,
                flag("attachRequired", true),
                flag("podInfoOnMount", false),
                flag("storageCapacity", false),
                json!(audiences),
                flag("requiresRepublish", false),
                json!(or_none(join(modes.map(s)))),
                created,
            ]
        }
        "PodTemplate" => {
            let template = &o["template"];
            let (names, images) = containers(&template["spec"]);
            let labels = template["metadata"]["labels"].as_object();
            let mut pairs: Vec<String> = labels
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", s(v)))
                .collect();
            pairs.sort();
            vec![
                name,
                json!(names),
                json!(images),
                json!(or_none(pairs.join(","))),
            ]
        }
        "Scale" => vec![
            name,
            json!(int(&spec["replicas"])),
            json!(int(&status["replicas"])),
            created,
        ],
        _ => vec![name, created],
    }
}

/// An autoscaler's metrics as `cpu: 45%/50%`, current against target,
/// two at most then `+ N more...` (upstream's printer).
fn hpa_targets(specs: &Value, statuses: &Value) -> String {
    let specs = specs.as_array().map(Vec::as_slice).unwrap_or_default();
    if specs.is_empty() {
        return "<none>".into();
    }
    let shown: Vec<String> = specs
        .iter()
        .enumerate()
        .take(2)
        .map(|(i, spec)| {
            let kind = match spec["type"].as_str() {
                Some("ContainerResource") => "containerResource",
                Some("Pods") => "pods",
                Some("Object") => "object",
                Some("External") => "external",
                _ => "resource",
            };
            let (m, current) = (&spec[kind], &statuses[i][kind]["current"]);
            let name = m["name"]
                .as_str()
                .or(m["metric"]["name"].as_str())
                .unwrap_or_default();
            let target = &m["target"];
            let (now, goal) = match target["averageUtilization"].as_i64() {
                Some(u) => (
                    current["averageUtilization"]
                        .as_i64()
                        .map(|c| format!("{c}%")),
                    format!("{u}%"),
                ),
                None if target["type"] == "Utilization" => (None, "<auto>".into()),
                None => {
                    let goal = target["averageValue"].as_str().or(target["value"].as_str());
                    let now = current["averageValue"]
                        .as_str()
                        .or(current["value"].as_str());
                    (now.map(str::to_owned), goal.unwrap_or_default().to_owned())
                }
            };
            format!("{name}: {}/{goal}", now.as_deref().unwrap_or("<unknown>"))
        })
        .collect();
    let mut out = shown.join(", ");
    if specs.len() > 2 {
        out.push_str(&format!(" + {} more...", specs.len() - 2));
    }
    out
}

/// Up to three items joined by commas, then "+ N more...", or `<unset>`
/// when there are none (upstream's printer).
fn first_three(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        return "<unset>".into();
    }
    let shown = items[..items.len().min(3)].join(",");
    match items.len() {
        n if n > 3 => format!("{shown} + {} more...", n - 3),
        _ => shown,
    }
}

/// A custom resource's printer columns: its own, else its age.
fn custom_columns(declared: &[crate::crd::Column]) -> Vec<crate::crd::Column> {
    if !declared.is_empty() {
        return declared.to_vec();
    }
    vec![crate::crd::Column {
        name: "Age".into(),
        kind: "date".into(),
        format: String::new(),
        description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".into(),
    }]
}

/// Renders objects of `r` as a Table. `include` is the `includeObject`
/// parameter: `None`, `Metadata` (the default) or `Object`.
pub fn render(
    r: &ResourceType,
    items: &[Value],
    resource_version: &str,
    cont: Option<&str>,
    include: &str,
) -> Value {
    let custom = crate::crd::served(r).map(|s| custom_columns(&s.version.columns));
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            json!({"cells": row_cells(r, custom.as_deref(), o), "object": row_object(o, include)})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata(resource_version, cont),
        "columnDefinitions": definitions(r, custom.as_deref()),
        "rows": rows,
    })
}

/// A row's object: none, the whole object, or its metadata (the default).
fn row_object(o: &Value, include: &str) -> Value {
    match include {
        "None" => Value::Null,
        "Object" => o.clone(),
        _ => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": o["metadata"].clone(),
        }),
    }
}

/// A `/scale` subresource (an `autoscaling/v1` Scale) as a one-row Table,
/// printed as upstream prints it.
pub fn render_scale(scale: &Value, include: &str) -> Value {
    let resource_version = meta::get_str(scale, "resourceVersion").unwrap_or_default();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata(resource_version, None),
        "columnDefinitions": kind_definitions("Scale"),
        "rows": [{"cells": cells("Scale", scale), "object": row_object(scale, include)}],
    })
}

/// Rows a thread renders at least before a Table is split between
/// threads.
const ROWS_PER_THREAD: usize = 1_000;

/// A Table of stored objects (JSON without their `resourceVersion`, given
/// beside each), written straight to bytes: only what the columns read is
/// decoded, and a row's metadata is copied as stored. A long list is
/// rendered on as many threads as there are cores.
pub fn render_stored(
    r: &ResourceType,
    items: &[(&[u8], i64)],
    resource_version: &str,
    cont: Option<&str>,
    include: &str,
) -> serde_json::Result<Vec<u8>> {
    if include == "Object" {
        let objects = items
            .iter()
            .map(|&(bytes, rev)| {
                let mut obj: Value = serde_json::from_slice(bytes)?;
                meta::set(&mut obj, "resourceVersion", rev.to_string());
                Ok(obj)
            })
            .collect::<serde_json::Result<Vec<_>>>()?;
        let mut out = serde_json::to_vec(&render(r, &objects, resource_version, cont, include))?;
        out.push(b'\n');
        return Ok(out);
    }
    let custom = crate::crd::served(r).map(|s| custom_columns(&s.version.columns));
    let keep = match custom {
        Some(_) => EVERYTHING,
        None => reads(r.kind),
    };
    let mut out = Vec::new();
    out.extend_from_slice(br#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":"#);
    serde_json::to_writer(&mut out, &list_metadata(resource_version, cont))?;
    out.extend_from_slice(br#","columnDefinitions":"#);
    serde_json::to_writer(&mut out, &definitions(r, custom.as_deref()))?;
    out.extend_from_slice(br#","rows":["#);
    let rows = Rows {
        r,
        custom: custom.as_deref(),
        keep,
        include,
    };
    // Asking for the cores reads the cgroup's quota: only a list long
    // enough to split asks.
    let threads = if items.len() < 2 * ROWS_PER_THREAD {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(items.len() / ROWS_PER_THREAD)
    };
    let mut chunks = items.chunks(items.len().div_ceil(threads).max(1));
    let first = chunks.next().unwrap_or_default();
    let others = std::thread::scope(|s| {
        let others: Vec<_> = chunks
            .map(|chunk| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    rows.write(&mut out, chunk).map(|()| out)
                })
            })
            .collect();
        rows.write(&mut out, first)?;
        others
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect::<serde_json::Result<Vec<_>>>()
    })?;
    for chunk in others {
        out.push(b',');
        out.extend_from_slice(&chunk);
    }
    out.extend_from_slice(b"]}\n");
    Ok(out)
}

/// How the rows of one Table are rendered.
#[derive(Clone, Copy)]
struct Rows<'a> {
    r: &'a ResourceType,
    custom: Option<&'a [crate::crd::Column]>,
    keep: &'static [(&'static str, Keep)],
    include: &'a str,
}

impl Rows<'_> {
    /// Writes the rows of `items`, separated by commas.
    fn write(self, out: &mut Vec<u8>, items: &[(&[u8], i64)]) -> serde_json::Result<()> {
        for (i, &(bytes, rev)) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let viewed = project::view(bytes, self.keep)?;
            out.extend_from_slice(br#"{"cells":"#);
            serde_json::to_writer(&mut *out, &row_cells(self.r, self.custom, &viewed.view))?;
            out.extend_from_slice(br#","object":"#);
            match (self.include, viewed.metadata) {
                ("None", _) | (_, None) => out.extend_from_slice(b"null"),
                (_, Some(metadata)) => {
                    out.extend_from_slice(
                        br#"{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":"#,
                    );
                    stamped(out, metadata.get(), rev);
                    out.push(b'}');
                }
            }
            out.push(b'}');
        }
        Ok(())
    }
}

/// Stored metadata with its `resourceVersion` put in.
fn stamped(out: &mut Vec<u8>, metadata: &str, rev: i64) {
    let Some(rest) = metadata.strip_prefix('{') else {
        out.extend_from_slice(metadata.as_bytes());
        return;
    };
    out.extend_from_slice(format!("{{\"resourceVersion\":\"{rev}\"").as_bytes());
    if !rest.trim_start().starts_with('}') {
        out.push(b',');
    }
    out.extend_from_slice(rest.as_bytes());
}

/// What the built-in columns of `kind` read of an object.
fn reads(kind: &str) -> &'static [(&'static str, Keep)] {
    const NAME_AND_AGE: Keep = Keep::Only(&[
        ("name", Keep::All),
        ("creationTimestamp", Keep::All),
        ("deletionTimestamp", Keep::All),
    ]);
    match kind {
        "Pod" => &[
            ("metadata", NAME_AND_AGE),
            (
                "spec",
                Keep::Only(&[
                    ("containers", Keep::Only(&[])),
                    (
                        "initContainers",
                        Keep::Only(&[("name", Keep::All), ("restartPolicy", Keep::All)]),
                    ),
                    ("nodeName", Keep::All),
                    ("readinessGates", Keep::All),
                ]),
            ),
            ("status", Keep::All),
        ],
        // Roles come from labels, the default class from an annotation.
        "Node" | "StorageClass" => EVERYTHING,
        "ControllerRevision" => &[
            (
                "metadata",
                Keep::Only(&[
                    ("name", Keep::All),
                    ("creationTimestamp", Keep::All),
                    ("deletionTimestamp", Keep::All),
                    ("ownerReferences", Keep::All),
                ]),
            ),
            ("*", Keep::All),
        ],
        _ => &[("metadata", NAME_AND_AGE), ("*", Keep::All)],
    }
}

const EVERYTHING: &[(&str, Keep)] = &[("*", Keep::All)];

fn list_metadata(resource_version: &str, cont: Option<&str>) -> Value {
    let mut metadata = json!({"resourceVersion": resource_version});
    if let Some(c) = cont {
        metadata["continue"] = json!(c);
    }
    metadata
}

fn definitions(r: &ResourceType, custom: Option<&[crate::crd::Column]>) -> Vec<Value> {
    match custom {
        Some(cols) => std::iter::once(json!({"name": "Name", "type": "string", "format": "name",
                "description": "Name must be unique within a namespace.", "priority": 0}))
        .chain(cols.iter().map(|c| {
            json!({"name": c.name, "type": c.kind, "format": c.format,
                "description": c.description, "priority": c.priority})
        }))
        .collect(),
        None => kind_definitions(r.kind),
    }
}

fn kind_definitions(kind: &str) -> Vec<Value> {
    columns(kind)
        .iter()
        .map(|(name, ty, priority)| {
            let mut c = json!({"name": name, "type": ty, "format": "", "description": "", "priority": priority});
            if *name == "Name" {
                c["format"] = json!("name");
            }
            c
        })
        .collect()
}

fn row_cells(r: &ResourceType, custom: Option<&[crate::crd::Column]>, o: &Value) -> Vec<Value> {
    match custom {
        Some(cols) => std::iter::once(o["metadata"]["name"].clone())
            .chain(cols.iter().map(|c| crate::crd::columns::cell(c, o)))
            .collect(),
        // Either API's events print alike, read as `v1` says them.
        None if crate::events::is_new_api(r.group, r.plural) => {
            cells(r.kind, &crate::events::to_core(o))
        }
        None => cells(r.kind, o),
    }
}

/// An event's row as upstream prints it: seen first at `firstTimestamp`
/// (or its `eventTime`), last at its series' last observation (or its
/// `lastTimestamp`), a singleton counting once.
fn event_cells(o: &Value) -> Vec<Value> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let since = |v: &Value| v.as_str().map_or("<unknown>".into(), age);
    let first = match o["firstTimestamp"].as_str() {
        Some(_) => since(&o["firstTimestamp"]),
        None => since(&o["eventTime"]),
    };
    let mut last = match o["lastTimestamp"].as_str() {
        Some(_) => since(&o["lastTimestamp"]),
        None => first.clone(),
    };
    let mut count = o["count"].as_i64().unwrap_or_default();
    if o["series"].is_object() {
        last = since(&o["series"]["lastObservedTime"]);
        count = o["series"]["count"].as_i64().unwrap_or_default();
    } else if count == 0 {
        count = 1;
    }
    let involved = &o["involvedObject"];
    let kind = s(&involved["kind"]).to_lowercase();
    let target = match involved["name"].as_str() {
        Some(name) if !name.is_empty() => format!("{kind}/{name}"),
        _ => kind,
    };
    let either = |a: &Value, b: &Value| Some(s(a)).filter(|a| !a.is_empty()).unwrap_or(s(b));
    let component = either(&o["source"]["component"], &o["reportingComponent"]);
    let instance = either(&o["source"]["host"], &o["reportingInstance"]);
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(s(&o["type"])),
        json!(s(&o["reason"])),
        json!(target),
        json!(s(&involved["fieldPath"])),
        json!(source),
        json!(s(&o["message"]).trim()),
        json!(first),
        json!(count),
        o["metadata"]["name"].clone(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup;

    #[test]
    fn human_durations() {
        for (secs, want) in [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (4 * 3600 + 60, "4h1m"),
            (30 * 3600, "30h"),
            (3 * 86400 + 3600, "3d1h"),
            (100 * 86400, "100d"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn pod_row() {
        let pods = lookup("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": meta::now()},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.42.0.5",
                "containerStatuses": [{"ready": true, "restartCount": 2, "state": {"running": {}}},
                    {"ready": false, "restartCount": 1, "state": {"running": {}}}]}});
        let t = render(pods, &[pod], "7", None, "Metadata");
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "p");
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], "3");
        assert_eq!(cells[5], "10.42.0.5");
        assert_eq!(cells[6], "n1");
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }

    #[test]
    fn pod_status_cells_as_upstreams_print_pod() {
        let init =
            json!([{"name": "i1"}, {"name": "side", "restartPolicy": "Always"}, {"name": "i2"}]);
        let spec = json!({"initContainers": init, "containers": [{"name": "a"}]});
        let done = |name: &str| json!({"name": name, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}});
        let running =
            json!({"name": "side", "state": {"running": {}}, "ready": true, "started": true});
        let pod =
            |status: Value| json!({"metadata": {"name": "p"}, "spec": spec, "status": status});
        let an_hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let cases = [
            (
                "the second init container runs",
                json!({"phase": "Pending", "initContainerStatuses": [done("i1"),
                    {"name": "side", "state": {"waiting": {"reason": "PodInitializing"}}}, {"name": "i2"}]}),
                ("0/2", "Init:1/3", "0"),
            ),
            (
                "a sidecar counts once started; the next init failed",
                json!({"phase": "Pending", "initContainerStatuses": [done("i1"), running,
                    {"name": "i2", "state": {"terminated": {"exitCode": 3}}, "restartCount": 2}]}),
                ("1/2", "Init:ExitCode:3", "2"),
            ),
            (
                "initialized: the sidecar's restarts and the app's",
                json!({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
                    "initContainerStatuses": [done("i1"),
                        {"name": "side", "state": {"running": {}}, "ready": true, "started": true, "restartCount": 1,
                         "lastState": {"terminated": {"finishedAt": an_hour_ago}}}, done("i2")],
                    "containerStatuses": [{"state": {"running": {}}, "ready": true, "restartCount": 1}]}),
                ("2/2", "Running", "2 (60m ago)"),
            ),
            (
                "an app container without a reason tells its exit code",
                json!({"phase": "Running", "containerStatuses": [{"state": {"terminated": {"exitCode": 2}}}]}),
                ("0/2", "ExitCode:2", "0"),
            ),
            (
                "gated",
                json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
                ("0/2", "SchedulingGated", "0"),
            ),
        ];
        for (name, status, (ready, reason, restarts)) in cases {
            let got = pod_summary(&pod(status));
            assert_eq!(
                got,
                (ready.into(), reason.into(), restarts.into()),
                "{name}"
            );
        }
        let gated = json!({"spec": {"readinessGates": [{"conditionType": "a"}, {"conditionType": "b"}]},
            "status": {"conditions": [{"type": "a", "status": "True"}, {"type": "b", "status": "False"}]}});
        assert_eq!(readiness_gates(&gated), "1/2");
    }

    #[test]
    fn rows_from_stored_bytes_match_rows_from_objects() {
        let now = meta::now();
        let managed =
            json!([{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {}}}]);
        let objects = [
            (
                "",
                "pods",
                json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "d", "creationTimestamp": now,
                    "deletionTimestamp": now, "managedFields": managed},
                "spec": {"nodeName": "n1", "containers": [{"name": "a", "image": "x"}],
                    "volumes": [{"name": "v", "emptyDir": {}}]},
                "status": {"phase": "Running", "podIP": "10.42.0.5", "containerStatuses": [
                    {"ready": true, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}),
            ),
            (
                "",
                "nodes",
                json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "n1", "creationTimestamp": now,
                    "labels": {"node-role.kubernetes.io/control-plane": ""}},
                "status": {"nodeInfo": {"kubeletVersion": "v1.35.0"},
                    "conditions": [{"type": "Ready", "status": "True"}]}}),
            ),
            (
                "",
                "configmaps",
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "d", "creationTimestamp": now},
                "data": {"a": "1", "b": "2"}}),
            ),
            (
                "apps",
                "deployments",
                json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "d"},
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}},
                "status": {"readyReplicas": 2}}),
            ),
            (
                "apps",
                "controllerrevisions",
                json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
                "metadata": {"name": "web-1", "namespace": "d", "creationTimestamp": now,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                        "name": "web", "uid": "u", "controller": true}]},
                "revision": 1}),
            ),
            (
                "rbac.authorization.k8s.io",
                "clusterroles",
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "view", "creationTimestamp": now}, "rules": []}),
            ),
        ];
        for (group, resource, obj) in objects {
            let r = lookup(group, "v1", resource).unwrap();
            let bytes = serde_json::to_vec(&obj).unwrap();
            let mut stamped = obj.clone();
            meta::set(&mut stamped, "resourceVersion", "7");
            for include in ["Metadata", "None", "Object"] {
                let want = render(r, &[stamped.clone()], "9", Some("next"), include);
                let got = render_stored(r, &[(&bytes[..], 7)], "9", Some("next"), include);
                let got: Value = serde_json::from_slice(&got.unwrap()).unwrap();
                assert_eq!(got, want, "{resource} with {include}");
            }
        }
        let pods = lookup("", "v1", "pods").unwrap();
        let empty = render_stored(pods, &[], "3", None, "Metadata").unwrap();
        let empty: Value = serde_json::from_slice(&empty).unwrap();
        assert_eq!(empty["rows"], json!([]));
        assert!(render_stored(pods, &[(&b"{"[..], 1)], "3", None, "Metadata").is_err());
    }

    /// A list long enough to be split between threads comes out whole and
    /// in order, and a corrupt object in a later part still fails it.
    #[test]
    fn long_lists_keep_every_row_in_order() {
        let r = lookup("", "v1", "configmaps").unwrap();
        let n = 3 * ROWS_PER_THREAD + 7;
        let objects: Vec<Value> = (0..n)
            .map(|i| {
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                    // Years old: the age column reads the same at both renders.
                    "metadata": {"name": format!("c{i}"), "namespace": "d", "creationTimestamp": "2020-01-01T00:00:00Z"},
                    "data": {"a": i.to_string()}})
            })
            .collect();
        let bytes: Vec<Vec<u8>> = objects
            .iter()
            .map(|o| serde_json::to_vec(o).unwrap())
            .collect();
        let mut stored: Vec<(&[u8], i64)> = bytes.iter().map(|b| (&b[..], 7)).collect();
        let stamped: Vec<Value> = objects
            .into_iter()
            .map(|mut o| {
                meta::set(&mut o, "resourceVersion", "7");
                o
            })
            .collect();
        let want = render(r, &stamped, "9", None, "Metadata");
        let got = render_stored(r, &stored, "9", None, "Metadata").unwrap();
        let got: Value = serde_json::from_slice(&got).unwrap();
        assert_eq!(got["rows"].as_array().map(Vec::len), Some(n));
        assert_eq!(got, want);
        stored[n - 1].0 = b"{";
        assert!(render_stored(r, &stored, "9", None, "Metadata").is_err());
    }

    #[test]
    fn jobs_and_cron_jobs_show_their_time_zone_and_template() {
        let cells = |plural: &str, o: Value| {
            let r = crate::registry::preferred("batch", plural).unwrap();
            render(r, &[o], "1", None, "None")["rows"][0]["cells"].clone()
        };
        let template = json!({"spec": {"containers": [
            {"name": "a", "image": "busybox"}, {"name": "b", "image": "nginx"}]}});
        let cron = json!({"metadata": {"name": "c"}, "spec": {"schedule": "@daily",
            "timeZone": "Europe/Paris", "jobTemplate": {"spec": {"template": template}}}});
        let row = cells("cronjobs", cron);
        assert_eq!(row[2], "Europe/Paris");
        assert_eq!(
            row.as_array().unwrap()[7..],
            [json!("a,b"), json!("busybox,nginx"), json!("<none>")]
        );
        let job = json!({"metadata": {"name": "j"}, "spec": {"template": template,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}}}});
        let row = cells("jobs", job);
        assert_eq!(
            row.as_array().unwrap()[5..],
            [
                json!("a,b"),
                json!("busybox,nginx"),
                json!("batch.kubernetes.io/controller-uid=u")
            ]
        );
    }

    #[test]
    fn a_services_external_column_follows_its_type() {
        let external = |spec: Value, status: Value| {
            let svc = json!({"metadata": {"name": "s"}, "spec": spec, "status": status});
            let r = crate::registry::preferred("", "services").unwrap();
            render(r, &[svc], "1", None, "None")["rows"][0]["cells"][3].clone()
        };
        let none = json!({});
        let name = json!({"type": "ExternalName", "externalName": "db.example.com"});
        assert_eq!(external(name, none.clone()), "db.example.com");
        let plain = json!({"type": "ClusterIP", "clusterIP": "10.43.0.9"});
        assert_eq!(external(plain, none.clone()), "<none>");
        let own = json!({"type": "NodePort", "externalIPs": ["192.0.2.1", "192.0.2.2"]});
        assert_eq!(external(own, none.clone()), "192.0.2.1,192.0.2.2");
        let balancer = json!({"type": "LoadBalancer", "externalIPs": ["192.0.2.1"]});
        assert_eq!(external(json!({"type": "LoadBalancer"}), none), "<pending>");
        let ingress = json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}, {"hostname": "lb.example"}]}});
        assert_eq!(
            external(balancer, ingress),
            "198.51.100.7,lb.example,192.0.2.1"
        );
    }

    #[test]
    fn rows_of_classes_quotas_revisions_and_ingresses() {
        let cells_of = |group: &str, plural: &str, o: Value| {
            let r = crate::registry::preferred(group, plural).unwrap();
            render(r, &[o], "1", None, "None")["rows"][0]["cells"].clone()
        };
        let revision = json!({"metadata": {"name": "web-1", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "web", "controller": true}]},
            "revision": 3});
        let cells = cells_of("apps", "controllerrevisions", revision);
        assert_eq!(
            (&cells[1], &cells[2]),
            (&json!("daemonset.apps/web"), &json!(3))
        );
        let quota = json!({"metadata": {"name": "q"}, "status": {
            "hard": {"requests.cpu": "1", "pods": "10", "limits.memory": "1Gi"},
            "used": {"pods": "2"}}});
        let cells = cells_of("", "resourcequotas", quota);
        assert_eq!(
            (&cells[1], &cells[2]),
            (
                &json!("pods: 2/10, requests.cpu: 0/1"),
                &json!("limits.memory: 0/1Gi")
            )
        );
        let ingress = json!({"metadata": {"name": "i"}, "spec": {"rules": [
            {"host": "a"}, {}, {"host": "b"}, {"host": "c"}, {"host": "d"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.2"}, {"hostname": "lb"}, {"ip": "10.0.0.2"}]}}});
        let cells = cells_of("networking.k8s.io", "ingresses", ingress);
        assert_eq!(
            cells.as_array().unwrap()[1..5],
            [
                json!("<none>"),
                json!("a,b,c + 2 more..."),
                json!("10.0.0.2,lb"),
                json!("80")
            ]
        );
        let class = json!({"metadata": {"name": "c"}, "spec": {"controller": "x.io/c",
            "parameters": {"apiGroup": "x.io", "kind": "Params", "name": "p"}}});
        let cells = cells_of("networking.k8s.io", "ingressclasses", class);
        assert_eq!(cells[2], "Params.x.io/p");
        let created = "2026-01-02T03:04:05Z";
        let role = json!({"metadata": {"name": "r", "creationTimestamp": created}});
        assert_eq!(
            cells_of("rbac.authorization.k8s.io", "clusterroles", role)[1],
            created
        );
    }

    #[test]
    fn endpoint_slice_rows() {
        let slices = lookup("discovery.k8s.io", "v1", "endpointslices").unwrap();
        let slice = |ports: Value, endpoints: Value| {
            json!({"metadata": {"name": "web-x", "creationTimestamp": meta::now()},
                "addressType": "IPv4", "ports": ports, "endpoints": endpoints})
        };
        let ep = |ip: &str| json!({"addresses": [ip]});
        let t = render(
            slices,
            &[
                slice(
                    json!([{"port": 80}, {"name": "h"}]),
                    json!([ep("10.0.0.1"), ep("10.0.0.2")]),
                ),
                slice(json!([]), json!([])),
                slice(
                    json!([{"port": 80}]),
                    json!((1..=5)
                        .map(|i| ep(&format!("10.0.0.{i}")))
                        .collect::<Vec<_>>()),
                ),
            ],
            "7",
            None,
            "Metadata",
        );
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "AddressType", "Ports", "Endpoints", "Age"]);
        let row = |i: usize| t["rows"][i]["cells"].clone();
        assert_eq!(row(0)[1], "IPv4");
        assert_eq!(row(0)[2], "80,h");
        assert_eq!(row(0)[3], "10.0.0.1,10.0.0.2");
        assert_eq!(row(1)[2], "<unset>");
        assert_eq!(row(1)[3], "<unset>");
        assert_eq!(row(2)[3], "10.0.0.1,10.0.0.2,10.0.0.3 + 2 more...");
    }
}
