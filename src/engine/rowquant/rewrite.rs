//! Finds the per-row int8 matmul chains `onnx/requantize_dynamic.py` writes and replaces each
//! with one `RowQuantMatMul` node. A chain is fused only when every node, constant and
//! consumer is exactly what the exporter emits (the twelve nodes, the constants' values, no
//! intermediate value used elsewhere), so the result is bit-identical; anything else is left
//! to ONNX Runtime as it is.
//!
//! ```text
//! Abs → ReduceMax(axes=[-1], keepdims) → Max(1e-30) → Div(127) = s   Div(A, s) → Round → Add(128)
//!   → Cast(uint8) → MatMulInteger(·, W, 128) → Cast(float) → Mul(s) → Mul(w_scale) = Y
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

use super::kernel::PackedWeights;
use super::op::{DOMAIN, OP_TYPE};
use super::proto::{self, DecodeError, Field};
use super::Registered;

/// The rewritten model, how many chains it fused, and the packed weights its nodes name (keep
/// it alive until the session is built).
pub struct Fused {
    pub model: Vec<u8>,
    pub chains: usize,
    pub packed_bytes: usize,
    pub weights: Registered,
}

#[derive(Debug)]
pub enum RewriteError {
    Decode(DecodeError),
    /// A weight tensor's data could not be read.
    Weights(String),
}

impl fmt::Display for RewriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode(e) => e.fmt(f),
            Self::Weights(m) => f.write_str(m),
        }
    }
}

impl From<DecodeError> for RewriteError {
    fn from(e: DecodeError) -> Self {
        Self::Decode(e)
    }
}

// ONNX field numbers (onnx.proto).
const MODEL_GRAPH: u32 = 7;
const MODEL_OPSET_IMPORT: u32 = 8;
const GRAPH_NODE: u32 = 1;
const GRAPH_INITIALIZER: u32 = 5;
const GRAPH_INPUT: u32 = 11;
const GRAPH_OUTPUT: u32 = 12;
const NODE_INPUT: u32 = 1;
const NODE_OUTPUT: u32 = 2;
const NODE_NAME: u32 = 3;
const NODE_OP_TYPE: u32 = 4;
const NODE_ATTRIBUTE: u32 = 5;
const NODE_DOMAIN: u32 = 7;
const ATTR_NAME: u32 = 1;
const ATTR_INT: u32 = 3;
const TENSOR_DIMS: u32 = 1;
const TENSOR_DATA_TYPE: u32 = 2;
const TENSOR_FLOAT_DATA: u32 = 4;
const TENSOR_INT32_DATA: u32 = 5;
const TENSOR_INT64_DATA: u32 = 7;
const TENSOR_NAME: u32 = 8;
const TENSOR_RAW_DATA: u32 = 9;
const TENSOR_EXTERNAL_DATA: u32 = 13;
const TENSOR_DATA_LOCATION: u32 = 14;
const ENTRY_KEY: u32 = 1;
const ENTRY_VALUE: u32 = 2;
const ATTR_TYPE: u32 = 20;
const ATTR_TYPE_INT: u64 = 2;
const VALUE_INFO_NAME: u32 = 1;
const OPSET_DOMAIN: u32 = 1;
const OPSET_VERSION: u32 = 2;
// TensorProto.DataType
const FLOAT: u64 = 1;
const UINT8: u64 = 2;
const INT8: u64 = 3;
const INT64: u64 = 7;

struct Node<'a> {
    raw: &'a [u8],
    inputs: Vec<&'a str>,
    outputs: Vec<&'a str>,
    name: &'a str,
    op_type: &'a str,
    domain: &'a str,
    /// Integer attributes; any other attribute makes the node unmatchable.
    ints: Vec<(&'a str, i64)>,
    other_attributes: bool,
}

impl<'a> Node<'a> {
    fn parse(raw: &'a [u8], body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut node = Node {
            raw,
            inputs: Vec::new(),
            outputs: Vec::new(),
            name: "",
            op_type: "",
            domain: "",
            ints: Vec::new(),
            other_attributes: false,
        };
        for f in proto::fields(body)? {
            let text = || f.str().ok_or(DecodeError("node string"));
            match f.number {
                NODE_INPUT => node.inputs.push(text()?),
                NODE_OUTPUT => node.outputs.push(text()?),
                NODE_NAME => node.name = text()?,
                NODE_OP_TYPE => node.op_type = text()?,
                NODE_DOMAIN => node.domain = text()?,
                NODE_ATTRIBUTE => {
                    let attr = proto::fields(f.bytes().ok_or(DecodeError("attribute"))?)?;
                    let name = attr
                        .iter()
                        .find(|a| a.number == ATTR_NAME)
                        .and_then(Field::str);
                    let int = attr
                        .iter()
                        .find(|a| a.number == ATTR_INT)
                        .and_then(Field::varint);
                    match (name, int) {
                        (Some(name), Some(v)) => node.ints.push((name, v as i64)),
                        _ => node.other_attributes = true,
                    }
                }
                _ => {}
            }
        }
        Ok(node)
    }

    /// A standard-domain `op` with exactly `inputs` inputs, one output, and only the integer
    /// attributes in `allowed` (with those values).
    fn is(&self, op: &str, inputs: usize, allowed: &[(&str, i64)]) -> bool {
        self.op_type == op
            && matches!(self.domain, "" | "ai.onnx")
            && self.inputs.len() == inputs
            && self.outputs.len() == 1
            && !self.other_attributes
            && self.ints.iter().all(|a| allowed.contains(a))
    }

    fn int(&self, name: &str) -> Option<i64> {
        self.ints.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
    }
}

/// What the matcher needs of an initializer: type, shape and, for small ones, the values.
struct Initializer<'a> {
    data_type: u64,
    dims: Vec<i64>,
    raw: Option<&'a [u8]>,
    floats: Vec<f32>,
    ints: Vec<i64>,
    /// `external_data` entries (location, offset, length) when stored outside the graph.
    external: Vec<(&'a str, &'a str)>,
    external_location: bool,
}

impl<'a> Initializer<'a> {
    fn parse(body: &'a [u8]) -> Result<(&'a str, Self), DecodeError> {
        let mut name = "";
        let mut init = Initializer {
            data_type: 0,
            dims: Vec::new(),
            raw: None,
            floats: Vec::new(),
            ints: Vec::new(),
            external: Vec::new(),
            external_location: false,
        };
        for f in proto::fields(body)? {
            match f.number {
                TENSOR_EXTERNAL_DATA => {
                    let entry = proto::fields(f.bytes().ok_or(DecodeError("external data"))?)?;
                    let get = |n| entry.iter().find(|e| e.number == n).and_then(Field::str);
                    if let (Some(k), Some(v)) = (get(ENTRY_KEY), get(ENTRY_VALUE)) {
                        init.external.push((k, v));
                    }
                }
                TENSOR_DATA_LOCATION => init.external_location = f.varint() == Some(1),
                TENSOR_NAME => name = f.str().ok_or(DecodeError("tensor name"))?,
                TENSOR_DATA_TYPE => init.data_type = f.varint().ok_or(DecodeError("data type"))?,
                TENSOR_DIMS => init
                    .dims
                    .extend(proto::packed_varints(&f)?.into_iter().map(|d| d as i64)),
                TENSOR_RAW_DATA => init.raw = f.bytes(),
                TENSOR_INT32_DATA | TENSOR_INT64_DATA => init
                    .ints
                    .extend(proto::packed_varints(&f)?.into_iter().map(|v| v as i64)),
                TENSOR_FLOAT_DATA => match f.value {
                    proto::Value::Fixed32(v) => init.floats.push(f32::from_bits(v)),
                    proto::Value::Bytes(b) => init.floats.extend(
                        b.chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    ),
                    _ => return Err(DecodeError("float data")),
                },
                _ => {}
            }
        }
        Ok((name, init))
    }

    fn elements(&self) -> i64 {
        self.dims.iter().product()
    }

    /// The raw little-endian bytes of a 1-byte-element tensor: inline, or read from its
    /// external data file (relative to `dir`, never outside it).
    fn byte_data(&self, name: &str, dir: &Path) -> Result<Vec<u8>, RewriteError> {
        let want = usize::try_from(self.elements())
            .map_err(|_| RewriteError::Weights(format!("{name}: bad shape")))?;
        let data = if !self.external_location {
            self.raw
                .map(<[u8]>::to_vec)
                .unwrap_or_else(|| self.ints.iter().map(|&v| v as u8).collect())
        } else {
            let get = |key: &str| {
                self.external
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|&(_, v)| v)
            };
            let location = get("location").ok_or_else(|| {
                RewriteError::Weights(format!("{name}: external data without a location"))
            })?;
            let rel = Path::new(location);
            if !rel
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
            {
                return Err(RewriteError::Weights(format!(
                    "{name}: external data location {location:?} leaves the model directory"
                )));
            }
            let number = |key: &str, default: u64| -> Result<u64, RewriteError> {
                get(key).map_or(Ok(default), |v| {
                    v.parse().map_err(|_| {
                        RewriteError::Weights(format!("{name}: bad external data {key} {v:?}"))
                    })
                })
            };
            let (offset, length) = (number("offset", 0)?, number("length", want as u64)?);
            let path = dir.join(rel);
            let read = || -> std::io::Result<Vec<u8>> {
                let mut file = std::fs::File::open(&path)?;
                file.seek(SeekFrom::Start(offset))?;
                let mut buf = vec![0u8; usize::try_from(length).unwrap_or(usize::MAX).min(want)];
                file.read_exact(&mut buf)?;
                Ok(buf)
            };
            read().map_err(|e| {
                RewriteError::Weights(format!(
                    "{name}: reading {} at offset {offset}: {e}",
                    path.display()
                ))
            })?
        };
        if data.len() != want {
            return Err(RewriteError::Weights(format!(
                "{name}: {} bytes of data for {want} elements",
                data.len()
            )));
        }
        Ok(data)
    }

    fn scalar_f32(&self) -> Option<f32> {
        if self.data_type != FLOAT || self.elements() != 1 {
            return None;
        }
        match self.raw {
            Some(&[a, b, c, d]) => Some(f32::from_le_bytes([a, b, c, d])),
            Some(_) => None,
            None => self.floats.first().copied(),
        }
    }

    fn scalar_u8(&self) -> Option<u8> {
        if self.data_type != UINT8 || self.elements() != 1 {
            return None;
        }
        match self.raw {
            Some(&[v]) => Some(v),
            Some(_) => None,
            None => self.ints.first().and_then(|&v| u8::try_from(v).ok()),
        }
    }

    fn scalar_i64(&self) -> Option<i64> {
        if self.data_type != INT64 || self.elements() != 1 {
            return None;
        }
        match self.raw {
            Some(r) if r.len() == 8 => r.try_into().ok().map(i64::from_le_bytes),
            Some(_) => None,
            None => self.ints.first().copied(),
        }
    }
}

/// Fuses every exporter chain in `model` (a serialized ModelProto whose external data lives in
/// `dir`), packing each chain's weights. `None` when no chain matched.
pub fn fuse(model: &[u8], dir: &Path) -> Result<Option<Fused>, RewriteError> {
    let model_fields = proto::fields(model)?;
    let graph_fields: Vec<&Field> = model_fields
        .iter()
        .filter(|f| f.number == MODEL_GRAPH)
        .collect();
    let [graph_field] = graph_fields[..] else {
        return Err(DecodeError("a model has exactly one graph").into());
    };
    let graph = proto::fields(graph_field.bytes().ok_or(DecodeError("graph"))?)?;

    let mut nodes = Vec::new();
    let mut inits: HashMap<&str, Initializer> = HashMap::new();
    // Values something outside the node list sees: graph inputs (which can override an
    // initializer, so it is not constant) and outputs.
    let mut external: HashSet<&str> = HashSet::new();
    for f in &graph {
        match f.number {
            GRAPH_NODE => nodes.push(Node::parse(f.raw, f.bytes().ok_or(DecodeError("node"))?)?),
            GRAPH_INITIALIZER => {
                let (name, init) =
                    Initializer::parse(f.bytes().ok_or(DecodeError("initializer"))?)?;
                inits.insert(name, init);
            }
            GRAPH_INPUT | GRAPH_OUTPUT => {
                let info = proto::fields(f.bytes().ok_or(DecodeError("value info"))?)?;
                if let Some(name) = info
                    .iter()
                    .find(|i| i.number == VALUE_INFO_NAME)
                    .and_then(Field::str)
                {
                    external.insert(name);
                }
            }
            _ => {}
        }
    }
    let constant = |name: &str| {
        if external.contains(name) {
            None
        } else {
            inits.get(name)
        }
    };

    let mut producer: HashMap<&str, usize> = HashMap::new();
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for &o in &n.outputs {
            producer.insert(o, i);
        }
        for &input in n.inputs.iter().filter(|s| !s.is_empty()) {
            consumers.entry(input).or_default().push(i);
        }
    }
    // The node producing `value`, if `value` feeds exactly `uses` nodes and nothing else.
    let internal = |value: &str, uses: usize| -> Option<usize> {
        if external.contains(value) || consumers.get(value).map_or(0, Vec::len) != uses {
            return None;
        }
        producer.get(value).copied()
    };
    let only_consumer = |value: &str| -> Option<usize> {
        match consumers.get(value).map(Vec::as_slice) {
            Some(&[c]) if !external.contains(value) => Some(c),
            _ => None,
        }
    };

    struct Chain<'a> {
        nodes: [usize; 12],
        a: &'a str,
        w: &'a str,
        w_scale: &'a str,
        y: &'a str,
        name: String,
    }
    let mut chains: Vec<Chain> = Vec::new();
    for (mm, node) in nodes.iter().enumerate() {
        let matched = (|| {
            if !node.is("MatMulInteger", 3, &[]) || constant(node.inputs[2])?.scalar_u8()? != 128 {
                return None;
            }
            let w = node.inputs[1];
            let w_init = constant(w)?;
            let &[k, n] = &w_init.dims[..] else {
                return None;
            };
            if w_init.data_type != INT8 || k <= 0 || n <= 0 {
                return None;
            }
            let cast_u8 = internal(node.inputs[0], 1)?;
            let n_cast_u8 = &nodes[cast_u8];
            if !n_cast_u8.is("Cast", 1, &[("to", UINT8 as i64)])
                || n_cast_u8.int("to") != Some(UINT8 as i64)
            {
                return None;
            }
            let shift = internal(n_cast_u8.inputs[0], 1)?;
            let n_shift = &nodes[shift];
            if !n_shift.is("Add", 2, &[]) || constant(n_shift.inputs[1])?.scalar_f32()? != 128.0 {
                return None;
            }
            let round = internal(n_shift.inputs[0], 1)?;
            if !nodes[round].is("Round", 1, &[]) {
                return None;
            }
            let div = internal(nodes[round].inputs[0], 1)?;
            let n_div = &nodes[div];
            if !n_div.is("Div", 2, &[]) {
                return None;
            }
            let (a, a_scale) = (n_div.inputs[0], n_div.inputs[1]);
            // the scale feeds the Div above and the row Mul below
            let scale = internal(a_scale, 2)?;
            let n_scale = &nodes[scale];
            if !n_scale.is("Div", 2, &[]) || constant(n_scale.inputs[1])?.scalar_f32()? != 127.0 {
                return None;
            }
            let floor = internal(n_scale.inputs[0], 1)?;
            let n_floor = &nodes[floor];
            if !n_floor.is("Max", 2, &[]) || constant(n_floor.inputs[1])?.scalar_f32()? != 1e-30 {
                return None;
            }
            let reduce = internal(n_floor.inputs[0], 1)?;
            let n_reduce = &nodes[reduce];
            if !n_reduce.is("ReduceMax", 2, &[("keepdims", 1)])
                || constant(n_reduce.inputs[1])?.scalar_i64()? != -1
            {
                return None;
            }
            let abs = internal(n_reduce.inputs[0], 1)?;
            if !nodes[abs].is("Abs", 1, &[]) || nodes[abs].inputs[0] != a {
                return None;
            }
            let cast_f = only_consumer(node.outputs[0])?;
            let n_cast_f = &nodes[cast_f];
            if !n_cast_f.is("Cast", 1, &[("to", FLOAT as i64)])
                || n_cast_f.int("to") != Some(FLOAT as i64)
            {
                return None;
            }
            let mul_row = only_consumer(n_cast_f.outputs[0])?;
            let n_mul_row = &nodes[mul_row];
            // Multiplication commutes exactly, so either operand order is the same chain.
            if !n_mul_row.is("Mul", 2, &[])
                || !same_pair(&n_mul_row.inputs, n_cast_f.outputs[0], a_scale)
            {
                return None;
            }
            if !consumers.get(a_scale)?.contains(&mul_row) {
                return None;
            }
            let mul_col = only_consumer(n_mul_row.outputs[0])?;
            let n_mul_col = &nodes[mul_col];
            if !n_mul_col.is("Mul", 2, &[]) {
                return None;
            }
            let w_scale = *n_mul_col
                .inputs
                .iter()
                .find(|&&i| i != n_mul_row.outputs[0])?;
            if !same_pair(&n_mul_col.inputs, n_mul_row.outputs[0], w_scale) {
                return None;
            }
            let s = constant(w_scale)?;
            if s.data_type != FLOAT || s.dims != [n] {
                return None;
            }
            Some(Chain {
                nodes: [
                    abs, reduce, floor, scale, div, round, shift, cast_u8, mm, cast_f, mul_row,
                    mul_col,
                ],
                a,
                w,
                w_scale,
                y: n_mul_col.outputs[0],
                name: format!("{}/{OP_TYPE}", node.name),
            })
        })();
        chains.extend(matched);
    }
    if chains.is_empty() {
        return Ok(None);
    }

    // Each fused node goes where its chain's last node was: its inputs (A and initializers)
    // exist before the chain's first node, and Y's consumers all come after the last.
    let removed: HashSet<usize> = chains.iter().flat_map(|c| c.nodes).collect();
    let replacement: HashMap<usize, &Chain> = chains.iter().map(|c| (c.nodes[11], c)).collect();
    let mut still_used: HashSet<&str> = HashSet::new();
    for (i, n) in nodes.iter().enumerate() {
        if !removed.contains(&i) {
            still_used.extend(n.inputs.iter().copied());
        }
    }
    for c in &chains {
        still_used.extend([c.a, c.w_scale]);
    }
    // The chains' constants (128, 127, 1e-30, the axis) and weights go with them unless
    // something else still reads them: ONNX Runtime would otherwise load the unpacked weights
    // (and warn about each unused initializer).
    let dropped: HashSet<&str> = chains
        .iter()
        .flat_map(|c| {
            c.nodes
                .iter()
                .flat_map(|&i| nodes[i].inputs.iter().copied())
        })
        .filter(|name| inits.contains_key(name) && !still_used.contains(name))
        .collect();

    let mut weights = Registered::default();
    let mut keys: HashMap<&str, (u64, usize, usize)> = HashMap::new();
    let mut packed_bytes = 0;
    for c in &chains {
        if keys.contains_key(c.w) {
            continue;
        }
        let init = &inits[c.w];
        let (k, n) = (init.dims[0] as usize, init.dims[1] as usize);
        let bytes = init.byte_data(c.w, dir)?;
        let w: Vec<i8> = bytes.into_iter().map(|b| b as i8).collect();
        let packed = PackedWeights::pack(&w, k, n);
        packed_bytes += packed.bytes();
        keys.insert(c.w, (weights.add(packed), k, n));
    }

    let mut new_graph = Vec::with_capacity(graph_field.raw.len());
    let mut node_index = 0;
    for f in &graph {
        match f.number {
            GRAPH_NODE => {
                let i = node_index;
                node_index += 1;
                if let Some(c) = replacement.get(&i) {
                    let node = fused_node(c.a, c.w_scale, c.y, &c.name, keys[c.w]);
                    proto::put_bytes(&mut new_graph, GRAPH_NODE, &node);
                } else if !removed.contains(&i) {
                    new_graph.extend_from_slice(nodes[i].raw);
                }
            }
            GRAPH_INITIALIZER => {
                let (name, _) = Initializer::parse(f.bytes().ok_or(DecodeError("initializer"))?)?;
                if !dropped.contains(name) {
                    new_graph.extend_from_slice(f.raw);
                }
            }
            _ => new_graph.extend_from_slice(f.raw),
        }
    }

    let mut out = Vec::with_capacity(model.len());
    let mut declared = false;
    for f in &model_fields {
        match f.number {
            MODEL_GRAPH => proto::put_bytes(&mut out, MODEL_GRAPH, &new_graph),
            MODEL_OPSET_IMPORT => {
                let opset = proto::fields(f.bytes().ok_or(DecodeError("opset import"))?)?;
                declared |= opset
                    .iter()
                    .any(|o| o.number == OPSET_DOMAIN && o.str() == Some(DOMAIN));
                out.extend_from_slice(f.raw);
            }
            _ => out.extend_from_slice(f.raw),
        }
    }
    if !declared {
        let mut opset = Vec::new();
        proto::put_bytes(&mut opset, OPSET_DOMAIN, DOMAIN.as_bytes());
        proto::put_varint_field(&mut opset, OPSET_VERSION, 1);
        proto::put_bytes(&mut out, MODEL_OPSET_IMPORT, &opset);
    }
    Ok(Some(Fused {
        model: out,
        chains: chains.len(),
        packed_bytes,
        weights,
    }))
}

fn same_pair(inputs: &[&str], x: &str, y: &str) -> bool {
    matches!(inputs, [a, b] if (*a == x && *b == y) || (*a == y && *b == x))
}

fn fused_node(
    a: &str,
    w_scale: &str,
    y: &str,
    name: &str,
    (key, k, n): (u64, usize, usize),
) -> Vec<u8> {
    let mut node = Vec::new();
    for input in [a, w_scale] {
        proto::put_bytes(&mut node, NODE_INPUT, input.as_bytes());
    }
    proto::put_bytes(&mut node, NODE_OUTPUT, y.as_bytes());
    proto::put_bytes(&mut node, NODE_NAME, name.as_bytes());
    proto::put_bytes(&mut node, NODE_OP_TYPE, OP_TYPE.as_bytes());
    proto::put_bytes(&mut node, NODE_DOMAIN, DOMAIN.as_bytes());
    for (attr, value) in [("weights", key as i64), ("k", k as i64), ("n", n as i64)] {
        let mut a = Vec::new();
        proto::put_bytes(&mut a, ATTR_NAME, attr.as_bytes());
        proto::put_varint_field(&mut a, ATTR_INT, value as u64);
        proto::put_varint_field(&mut a, ATTR_TYPE, ATTR_TYPE_INT);
        proto::put_bytes(&mut node, NODE_ATTRIBUTE, &a);
    }
    node
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(dir: &str) -> (Vec<u8>, std::path::PathBuf) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("onnx/models")
            .join(dir);
        (std::fs::read(dir.join("model.onnx")).unwrap(), dir)
    }

    fn op_types(model: &[u8]) -> Vec<String> {
        let fields = proto::fields(model).unwrap();
        let graph = fields.iter().find(|f| f.number == MODEL_GRAPH).unwrap();
        proto::fields(graph.bytes().unwrap())
            .unwrap()
            .iter()
            .filter(|f| f.number == GRAPH_NODE)
            .map(|f| {
                Node::parse(f.raw, f.bytes().unwrap())
                    .unwrap()
                    .op_type
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn every_exporter_chain_becomes_one_node_and_the_rest_is_kept() {
        let (bytes, dir) = model("edge-tiny-genai-dq");
        let before = op_types(&bytes);
        let fused = fuse(&bytes, &dir).unwrap().expect("chains found");
        assert_eq!(fused.chains, 21);
        let after = op_types(&fused.model);
        assert_eq!(after.iter().filter(|o| *o == OP_TYPE).count(), 21);
        for gone in ["MatMulInteger", "Round", "Abs", "ReduceMax"] {
            assert!(!after.iter().any(|o| o == gone), "{gone} left behind");
        }
        assert_eq!(
            after.len(),
            before.len() - 21 * 11,
            "twelve nodes become one"
        );
        let kept = |ops: &[String]| {
            ops.iter()
                .filter(|o| {
                    !matches!(
                        o.as_str(),
                        "Abs"
                            | "ReduceMax"
                            | "Max"
                            | "Div"
                            | "Round"
                            | "Add"
                            | "Cast"
                            | "MatMulInteger"
                            | "Mul"
                            | "RowQuantMatMul"
                    )
                })
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kept(&before),
            kept(&after),
            "other nodes untouched, in order"
        );
        assert!(fused.packed_bytes > 0);
    }

    #[test]
    fn graphs_without_the_chain_are_left_alone() {
        let (bytes, dir) = model("edge-tiny-genai");
        assert!(fuse(&bytes, &dir).unwrap().is_none(), "MatMulNBits graph");
        let (bytes, dir) = model("edge-tiny-optimum");
        assert!(
            fuse(&bytes, &dir).unwrap().is_none(),
            "DynamicQuantizeLinear graph"
        );
    }

    #[test]
    fn external_data_outside_the_model_directory_is_refused() {
        let init = Initializer {
            data_type: INT8,
            dims: vec![2, 2],
            raw: None,
            floats: Vec::new(),
            ints: Vec::new(),
            external: vec![("location", "../../etc/passwd")],
            external_location: true,
        };
        let err = init
            .byte_data("w", Path::new("/tmp"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("leaves the model directory"), "{err}");
    }
}
