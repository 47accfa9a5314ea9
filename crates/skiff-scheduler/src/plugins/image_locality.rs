//! ImageLocality: favours nodes that already hold the pod's images, by
//! their size, scaled by how many nodes hold them (an image everywhere
//! says little about where to go).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{CycleState, PreScore, Score, MAX_SCORE};
use crate::node_info::NodeInfo;

const MB: i64 = 1024 * 1024;
/// Below this sum of sizes a node scores 0 (upstream's thresholds).
const MIN_THRESHOLD: i64 = 23 * MB;
/// At this size per container a node scores the maximum.
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

pub struct ImageLocality;

/// The share of all nodes holding each of the pod's images, by name.
struct Spread(HashMap<String, f64>);

/// The pod's images as nodes name them: an image without a tag or digest
/// is `:latest`, as upstream normalizes it (no registry is added).
fn images(pod: &Pod) -> impl Iterator<Item = String> + '_ {
    let spec = pod.spec.iter();
    let containers = spec.flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers));
    containers.filter_map(|c| c.image.as_deref()).map(|name| {
        let tagged =
            name.rfind(':').unwrap_or(0) > name.rfind('/').unwrap_or(0) || name.contains('@');
        if tagged || name.is_empty() {
            name.to_owned()
        } else {
            format!("{name}:latest")
        }
    })
}

impl PreScore for ImageLocality {
    fn name(&self) -> &'static str {
        "ImageLocality"
    }

    fn pre_score(&self, state: &mut CycleState, pod: &Pod, nodes: &[NodeInfo]) {
        if !state.existing.images {
            return;
        }
        let spread = images(pod)
            .map(|image| {
                let holding = nodes.iter().filter(|n| n.images.contains_key(&image));
                let share = holding.count() as f64 / nodes.len() as f64;
                (image, share)
            })
            .collect();
        state.put("ImageLocality", Spread(spread));
    }
}

impl Score for ImageLocality {
    fn name(&self) -> &'static str {
        "ImageLocality"
    }

    fn weight(&self) -> i64 {
        1
    }

    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> i64 {
        if !state.existing.images {
            return 0;
        }
        let Some(Spread(spread)) = state.get::<Spread>("ImageLocality") else {
            return 0;
        };
        let mut containers = 0;
        let mut sum = 0;
        for image in images(pod) {
            containers += 1;
            if let (Some(size), Some(share)) = (node.images.get(&image), spread.get(&image)) {
                sum += (*size as f64 * share) as i64;
            }
        }
        let max = MAX_CONTAINER_THRESHOLD * containers;
        let sum = sum.clamp(MIN_THRESHOLD, max.max(MIN_THRESHOLD));
        if max <= MIN_THRESHOLD {
            return 0;
        }
        MAX_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::test_util::pod;
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;

    fn holding(name: &str, images: serde_json::Value) -> NodeInfo {
        NodeInfo::new(
            serde_json::from_value::<Node>(json!({"metadata": {"name": name},
                "status": {"allocatable": {"cpu": "4"}, "images": images}}))
            .unwrap(),
        )
    }

    fn scores(p: &Pod, nodes: &[NodeInfo]) -> Vec<i64> {
        let mut state = CycleState::for_pod(p);
        ImageLocality.pre_score(&mut state, p, nodes);
        nodes
            .iter()
            .map(|n| ImageLocality.score(&state, p, n))
            .collect()
    }

    #[test]
    fn nodes_holding_larger_images_score_higher_scaled_by_their_spread() {
        let p = pod(json!({"containers": [
            {"name": "a", "image": "gcr.io/40"}, {"name": "b", "image": "gcr.io/300:v1"}]}));
        let nodes = [
            holding(
                "n1",
                json!([{"names": ["gcr.io/40:latest", "gcr.io/40:v1"], "sizeBytes": 40 * MB}]),
            ),
            holding(
                "n2",
                json!([{"names": ["gcr.io/300:v1"], "sizeBytes": 300 * MB}]),
            ),
            holding("n3", json!([])),
        ];
        // Each image is on one node of three: 40 MB × 1/3 is under the
        // minimum; 300 MB × 1/3 = 100 MB of a 2,000 MB maximum.
        let want = 100 * (100 * MB - MIN_THRESHOLD) / (2000 * MB - MIN_THRESHOLD);
        assert_eq!(scores(&p, &nodes), vec![0, want, 0]);
        // An image on every node counts in full.
        let big = pod(json!({"containers": [{"name": "a", "image": "r/big:1"}]}));
        let everywhere = json!([{"names": ["r/big:1"], "sizeBytes": 2000 * MB}]);
        let nodes = [holding("n1", everywhere.clone()), holding("n2", everywhere)];
        assert_eq!(scores(&big, &nodes), vec![MAX_SCORE, MAX_SCORE]);
        // Without images anywhere, every node scores 0 (the scheduler
        // then says so, and no node is looked at).
        assert_eq!(scores(&big, &[holding("n1", json!([]))]), vec![0]);
        assert_eq!(
            images(&p).collect::<Vec<_>>(),
            ["gcr.io/40:latest", "gcr.io/300:v1"]
        );
    }
}
