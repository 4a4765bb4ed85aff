//! Just enough of the ONNX format to know which weights feed a normalization layer: a bounded
//! protobuf reader for `ModelProto.graph` (nodes with inputs, outputs and op types; initializer
//! names). Hostile input cannot make it read out of bounds, recurse deeply or allocate more
//! than the file's own size.

/// A node of the graph.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    /// `op_type` (Conv, Gemm, BatchNormalization, ...).
    pub op: String,
    /// Input value names.
    pub inputs: Vec<String>,
    /// Output value names.
    pub outputs: Vec<String>,
}

/// The parts of an ONNX graph normwd uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    /// Nodes in file order.
    pub nodes: Vec<Node>,
    /// Names of the initializers (the weights).
    pub initializers: Vec<String>,
}

/// A protobuf field: number, wire type, payload (length-delimited fields only).
type Field<'a> = (u64, u8, &'a [u8]);

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    /// Next field: (number, wire type, payload for length-delimited fields).
    fn field(&mut self) -> Result<Option<Field<'a>>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (num, wt) = (key >> 3, (key & 7) as u8);
        let payload: &[u8] = match wt {
            0 => {
                self.varint()?;
                &[]
            }
            1 | 5 => {
                let n = if wt == 1 { 8 } else { 4 };
                if self.pos + n > self.buf.len() {
                    return Err("truncated fixed-size field".into());
                }
                self.pos += n;
                &[]
            }
            2 => {
                let len = self.varint()? as usize;
                let end = self
                    .pos
                    .checked_add(len)
                    .filter(|e| *e <= self.buf.len())
                    .ok_or_else(|| format!("field {num} declares {len} bytes, past the end of the data"))?;
                let p = &self.buf[self.pos..end];
                self.pos = end;
                p
            }
            w => return Err(format!("unsupported protobuf wire type {w} (field {num})")),
        };
        Ok(Some((num, wt, payload)))
    }
}

fn string(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a name is not valid UTF-8".to_string())
}

fn fields(buf: &[u8], mut f: impl FnMut(u64, u8, &[u8]) -> Result<(), String>) -> Result<(), String> {
    let mut r = Reader { buf, pos: 0 };
    while let Some((n, w, p)) = r.field()? {
        f(n, w, p)?;
    }
    Ok(())
}

/// Parses an ONNX `ModelProto`; the error says what is wrong (the caller names the file).
pub fn parse(bytes: &[u8]) -> Result<Graph, String> {
    let mut graph = None;
    fields(bytes, |n, w, p| {
        if n == 7 && w == 2 {
            graph = Some(p.to_vec());
        }
        Ok(())
    })?;
    let g = graph.ok_or("no graph (ModelProto field 7): not an ONNX model")?;
    let mut out = Graph::default();
    fields(&g, |n, w, p| {
        match (n, w) {
            (1, 2) => {
                let mut node = Node::default();
                fields(p, |n, w, p| {
                    match (n, w) {
                        (1, 2) => node.inputs.push(string(p)?),
                        (2, 2) => node.outputs.push(string(p)?),
                        (4, 2) => node.op = string(p)?,
                        _ => {}
                    }
                    Ok(())
                })?;
                out.nodes.push(node);
            }
            (5, 2) => {
                fields(p, |n, w, p| {
                    if n == 8 && w == 2 {
                        out.initializers.push(string(p)?);
                    }
                    Ok(())
                })?;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(out)
}

/// Normalization ops whose input is scale-invariant.
pub const NORM_OPS: [&str; 4] = ["BatchNormalization", "LayerNormalization", "GroupNormalization", "InstanceNormalization"];

/// Initializers used as the weight of a Conv / Gemm / MatMul whose output goes straight
/// (possibly through Identity) into a normalization op.
pub fn weights_before_norm(g: &Graph) -> Vec<String> {
    fn consumers<'g>(g: &'g Graph, value: &str) -> Vec<&'g Node> {
        g.nodes.iter().filter(|n| n.inputs.first().map(|i| i == value).unwrap_or(false)).collect()
    }
    let mut out = Vec::new();
    for n in g.nodes.iter().filter(|n| matches!(n.op.as_str(), "Conv" | "Gemm" | "MatMul")) {
        let Some(w) = n.inputs.get(1) else { continue };
        if !g.initializers.contains(w) {
            continue;
        }
        let mut value = n.outputs.first().cloned().unwrap_or_default();
        // Follow Identity nodes (exporters insert them), at most a few.
        for _ in 0..4 {
            match consumers(g, &value).into_iter().find(|c| c.op == "Identity") {
                Some(id) => value = id.outputs.first().cloned().unwrap_or_default(),
                None => break,
            }
        }
        if consumers(g, &value).iter().any(|c| NORM_OPS.contains(&c.op.as_str())) && !out.contains(w) {
            out.push(w.clone());
        }
    }
    out
}

/// Why a graph cannot tell which weights feed a normalization although the checkpoints have
/// norm layers (`has_norms`): its exporter folded them into the convolutions (the default
/// `torch.onnx.export` of an eval-mode model does). Then it has no normalization node, and its
/// conv weights are new initializers (`onnx::Conv_193`) named in no checkpoint (`in_checkpoint`).
/// `None` when the graph keeps its norms.
pub fn folded_norms(g: &Graph, has_norms: bool, in_checkpoint: impl Fn(&str) -> bool) -> Option<String> {
    if !has_norms || g.nodes.iter().any(|n| NORM_OPS.contains(&n.op.as_str())) {
        return None;
    }
    let renamed: Vec<&String> = g
        .nodes
        .iter()
        .filter(|n| n.op == "Conv")
        .filter_map(|n| n.inputs.get(1))
        .filter(|w| g.initializers.contains(w) && !in_checkpoint(w))
        .collect();
    let first = renamed.first()?;
    Some(format!(
        "its normalization layers were folded into the convolutions (no BatchNormalization node; {} conv weights such as {first} are in no checkpoint), so it cannot show which weights feed a norm: export with torch.onnx.export(model, x, f, training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False, dynamo=False), or leave out --graph to guess from names",
        renamed.len()
    ))
}

/// Encodes a graph as ONNX bytes (the fields [`parse`] reads): for tests and fixtures.
pub fn encode(g: &Graph) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn ld(num: u64, p: &[u8], out: &mut Vec<u8>) {
        varint(num << 3 | 2, out);
        varint(p.len() as u64, out);
        out.extend_from_slice(p);
    }
    let mut graph = Vec::new();
    for n in &g.nodes {
        let mut node = Vec::new();
        for i in &n.inputs {
            ld(1, i.as_bytes(), &mut node);
        }
        for o in &n.outputs {
            ld(2, o.as_bytes(), &mut node);
        }
        ld(4, n.op.as_bytes(), &mut node);
        ld(1, &node, &mut graph);
    }
    for i in &g.initializers {
        let mut t = Vec::new();
        ld(8, i.as_bytes(), &mut t);
        ld(5, &t, &mut graph);
    }
    let mut model = Vec::new();
    varint(1 << 3, &mut model); // ir_version
    varint(8, &mut model);
    ld(7, &graph, &mut model);
    model
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, i: &[&str], o: &[&str]) -> Node {
        Node { op: op.into(), inputs: i.iter().map(|s| s.to_string()).collect(), outputs: o.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn finds_conv_before_batchnorm_and_survives_garbage() {
        let g = Graph {
            nodes: vec![
                node("Conv", &["x", "conv1.weight"], &["a"]),
                node("BatchNormalization", &["a", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"], &["b"]),
                node("Relu", &["b"], &["c"]),
                node("Gemm", &["c", "fc.weight", "fc.bias"], &["y"]),
            ],
            initializers: ["conv1.weight", "bn1.weight", "bn1.bias", "fc.weight", "fc.bias"].map(String::from).to_vec(),
        };
        let bytes = encode(&g);
        assert_eq!(parse(&bytes).unwrap(), g);
        assert_eq!(weights_before_norm(&g), vec!["conv1.weight".to_string()]);
        for cut in [1, 5, bytes.len() / 2, bytes.len() - 1] {
            assert!(parse(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        // A length field that declares 2^60 bytes must fail, not allocate.
        let mut huge = vec![(7 << 3) | 2];
        huge.extend([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]);
        assert!(parse(&huge).unwrap_err().contains("past the end"));
        assert!(parse(b"not onnx at all").is_err());
    }
}
