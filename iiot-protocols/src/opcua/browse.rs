//! Walking a server's address space, and turning what was found into a tag map.

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;

use iiot_core::types::TagPath;
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, BrowseResult, ByteString, NodeClass, NodeId,
    ReadValueId, ReferenceDescription, TimestampsToReturn, Variant,
};

use super::client::{BrowsedVariable, OpcUaClient};
use super::convert::WriteType;
use super::error::OpcUaError;

/// Most nodes one walk visits: a browse of a huge server stops there (and says so in
/// the log) instead of growing without bound.
pub const MAX_NODES: usize = 20_000;

/// Nodes browsed in one request.
const CHUNK: usize = 100;

const HIERARCHICAL: u32 = 33;
/// AccessLevel bit 1: CurrentWrite.
const CURRENT_WRITE: u8 = 0x02;

pub(super) async fn walk(
    client: &OpcUaClient,
    start: NodeId,
    max_depth: usize,
) -> Result<Vec<BrowsedVariable>, OpcUaError> {
    let mut seen: HashSet<NodeId> = HashSet::from([start.clone()]);
    let mut queue: VecDeque<(NodeId, String, usize)> = VecDeque::from([(start, String::new(), 0)]);
    let mut vars: Vec<(NodeId, String)> = Vec::new();
    while !queue.is_empty() {
        let level: Vec<_> = queue.drain(..queue.len().min(CHUNK)).collect();
        let descs: Vec<BrowseDescription> = level
            .iter()
            .map(|(id, _, _)| BrowseDescription {
                node_id: id.clone(),
                browse_direction: BrowseDirection::Forward,
                reference_type_id: NodeId::new(0, HIERARCHICAL),
                include_subtypes: true,
                node_class_mask: NodeClass::Object as u32 | NodeClass::Variable as u32,
                result_mask: 0x3F,
            })
            .collect();
        let results = client
            .call("browse", client.session().browse(&descs, 1000, None))
            .await?;
        for ((_, path, depth), result) in level.into_iter().zip(results) {
            for r in all_references(client, result).await? {
                if seen.len() >= MAX_NODES {
                    tracing::warn!(
                        "browse stopped after {MAX_NODES} nodes; start lower in the tree"
                    );
                    queue.clear();
                    break;
                }
                let id = r.node_id.node_id.clone();
                if !r.node_id.namespace_uri.is_null() || !seen.insert(id.clone()) {
                    continue;
                }
                let name = r.browse_name.name.value().clone().unwrap_or_default();
                let child = if path.is_empty() {
                    name
                } else {
                    format!("{path}/{name}")
                };
                match r.node_class {
                    NodeClass::Variable => vars.push((id, child)),
                    // The server's own objects (namespace 0: Server, diagnostics) are not
                    // plant data.
                    NodeClass::Object if depth + 1 < max_depth && id.namespace != 0 => {
                        queue.push_back((id, child, depth + 1));
                    }
                    _ => {}
                }
            }
        }
    }
    describe(client, vars).await
}

/// The references of one result, following continuation points.
async fn all_references(
    client: &OpcUaClient,
    mut result: BrowseResult,
) -> Result<Vec<ReferenceDescription>, OpcUaError> {
    let mut refs = result.references.take().unwrap_or_default();
    let mut cp: ByteString = result.continuation_point;
    while !cp.is_null_or_empty() && refs.len() < MAX_NODES {
        let mut next = client
            .call(
                "browse_next",
                client
                    .session()
                    .browse_next(false, std::slice::from_ref(&cp)),
            )
            .await?;
        let Some(r) = next.pop() else { break };
        refs.extend(r.references.unwrap_or_default());
        cp = r.continuation_point;
    }
    Ok(refs)
}

/// Data type and write access of each variable.
async fn describe(
    client: &OpcUaClient,
    vars: Vec<(NodeId, String)>,
) -> Result<Vec<BrowsedVariable>, OpcUaError> {
    let mut out = Vec::with_capacity(vars.len());
    for chunk in vars.chunks(CHUNK) {
        let reads: Vec<ReadValueId> = chunk
            .iter()
            .flat_map(|(id, _)| {
                [
                    AttributeId::DataType,
                    AttributeId::UserAccessLevel,
                    AttributeId::ValueRank,
                ]
                .map(|a| ReadValueId {
                    node_id: id.clone(),
                    attribute_id: a as u32,
                    ..ReadValueId::default()
                })
            })
            .collect();
        let values = client
            .call(
                "read",
                client
                    .session()
                    .read(&reads, TimestampsToReturn::Neither, 0.0),
            )
            .await?;
        for ((id, path), attrs) in chunk.iter().zip(values.chunks(3)) {
            let mut data_type = match attrs.first().and_then(|d| d.value.as_ref()) {
                Some(Variant::NodeId(t)) => match WriteType::of(t) {
                    Ok(w) => w.name().to_owned(),
                    Err(_) => t.to_string(),
                },
                _ => "unknown".to_owned(),
            };
            let writable = matches!(
                attrs.get(1).and_then(|d| d.value.as_ref()),
                Some(Variant::Byte(a)) if a & CURRENT_WRITE != 0
            );
            // ValueRank -1 is a scalar; -3 scalar or one dimension, -2 any, 0 and
            // more are arrays: only a scalar has a core value for sure.
            if let Some(Variant::Int32(rank)) = attrs.get(2).and_then(|d| d.value.as_ref())
                && *rank != -1
            {
                data_type.push_str("[]");
            }
            out.push(BrowsedVariable {
                node: id.to_string(),
                path: path.clone(),
                data_type,
                writable,
            });
        }
    }
    Ok(out)
}

/// The types a source turns into core values (the others are listed commented out).
fn readable(data_type: &str) -> bool {
    WriteType::NAMES.contains(&data_type)
}

/// A tag name from a browse path: characters a tag path refuses become `_`.
fn tag_name(path: &str) -> Option<TagPath> {
    let cleaned: String = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|seg| {
            seg.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/");
    TagPath::new(&cleaned).ok()
}

/// The variables as a TOML tag map for [`super::OpcUaConfig`]: one `[[tags]]` per
/// variable, named after its browse path; variables whose type has no core value, and
/// names that clash, are written commented out with the reason.
pub fn tag_map_toml(endpoint: &str, vars: &[BrowsedVariable]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# OPC-UA tag map of {endpoint} ({} variables)",
        vars.len()
    );
    let _ = writeln!(out, "endpoint = {}", toml_str(endpoint));
    let mut names = HashSet::new();
    for v in vars {
        let name = tag_name(&v.path);
        let problem = match &name {
            None => Some("its browse path is not a tag path".to_owned()),
            Some(n) if !names.insert(n.clone()) => Some(format!("a second variable is named {n}")),
            Some(_) if !readable(&v.data_type) => {
                Some(format!("data type {} has no core value", v.data_type))
            }
            Some(_) => None,
        };
        let c = if problem.is_some() { "# " } else { "" };
        out.push('\n');
        if let Some(p) = &problem {
            let _ = writeln!(out, "# left out: {p}");
        }
        let _ = writeln!(out, "{c}[[tags]]  # {}", v.data_type);
        let shown = name.map_or_else(|| v.path.clone(), |n| n.to_string());
        let _ = writeln!(out, "{c}name = {}", toml_str(&shown));
        let _ = writeln!(out, "{c}node = {}", toml_str(&v.node));
        if v.writable {
            let _ = writeln!(out, "{c}writable = true");
        }
    }
    out
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opcua::OpcUaConfig;

    #[test]
    fn a_tag_map_parses_back_and_explains_what_it_left_out() {
        let vars = [
            BrowsedVariable {
                node: "ns=2;s=Plant.Temp".into(),
                path: "Plant/Temp (°C)".into(),
                data_type: "Double".into(),
                writable: false,
            },
            BrowsedVariable {
                node: "ns=2;i=7".into(),
                path: "Plant/Set point".into(),
                data_type: "Int32".into(),
                writable: true,
            },
            BrowsedVariable {
                node: "ns=2;i=8".into(),
                path: "Plant/Range".into(),
                data_type: "i=884".into(),
                writable: false,
            },
            BrowsedVariable {
                node: "ns=2;i=9".into(),
                path: "Plant/Set_point".into(),
                data_type: "Int32".into(),
                writable: false,
            },
        ];
        let text = tag_map_toml("opc.tcp://127.0.0.1:4840/", &vars);
        let cfg = OpcUaConfig::from_toml_str(&text).unwrap();
        let names: Vec<_> = cfg.tags.iter().map(|t| t.name.to_string()).collect();
        assert_eq!(names, ["Plant/Temp___C_", "Plant/Set_point"]);
        assert!(cfg.tags[1].writable);
        assert!(
            text.contains("# left out: data type i=884 has no core value"),
            "{text}"
        );
        assert!(
            text.contains("# left out: a second variable is named Plant/Set_point"),
            "{text}"
        );
    }
}
