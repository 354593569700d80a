//! A minimal decoder for Kubernetes protobuf request bodies
//! (`application/vnd.kubernetes.protobuf`), enough for the objects kubectl's
//! typed generators send (`kubectl create namespace|configmap|secret|serviceaccount`).
//! Other kinds sent as protobuf get 415 Unsupported Media Type. Responses are
//! always JSON (clients accept it).

use serde_json::{Map, Value, json};

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b, i: 0 }
    }
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let byte = *self.b.get(self.i)?;
            self.i += 1;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
            shift += 7;
            if shift > 63 {
                return None;
            }
        }
    }
    fn next(&mut self) -> Option<Option<(u64, Field<'a>)>> {
        if self.i >= self.b.len() {
            return Some(None);
        }
        let key = self.varint()?;
        let (num, wt) = (key >> 3, key & 7);
        let f = match wt {
            0 => Field::Varint(self.varint()?),
            2 => {
                let len = self.varint()? as usize;
                let s = self.b.get(self.i..self.i + len)?;
                self.i += len;
                Field::Bytes(s)
            }
            1 => {
                self.i += 8;
                Field::Varint(0)
            }
            5 => {
                self.i += 4;
                Field::Varint(0)
            }
            _ => return None,
        };
        Some(Some((num, f)))
    }
    fn fields(b: &'a [u8]) -> Option<Vec<(u64, Field<'a>)>> {
        let mut r = Reader::new(b);
        let mut out = vec![];
        while let Some(f) = r.next()? {
            out.push(f);
        }
        Some(out)
    }
}

fn s(b: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(b).into_owned())
}

fn map_entry(b: &[u8], bytes_value: bool) -> Option<(String, Value)> {
    let mut k = String::new();
    let mut v = Value::String(String::new());
    for (n, f) in Reader::fields(b)? {
        if let Field::Bytes(x) = f {
            match n {
                1 => k = String::from_utf8_lossy(x).into_owned(),
                2 => {
                    v = if bytes_value {
                        json!(crate::util::b64_encode(x))
                    } else {
                        s(x)
                    }
                }
                _ => {}
            }
        }
    }
    Some((k, v))
}

fn object_meta(b: &[u8]) -> Option<Value> {
    let mut m = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut finalizers = vec![];
    for (n, f) in Reader::fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => {
                m.insert("name".into(), s(x));
            }
            (2, Field::Bytes(x)) => {
                m.insert("generateName".into(), s(x));
            }
            (3, Field::Bytes(x)) if !x.is_empty() => {
                m.insert("namespace".into(), s(x));
            }
            (6, Field::Bytes(x)) => {
                m.insert("resourceVersion".into(), s(x));
            }
            (11, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, false)?;
                labels.insert(k, v);
            }
            (12, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, false)?;
                annotations.insert(k, v);
            }
            (14, Field::Bytes(x)) => finalizers.push(s(x)),
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    Some(Value::Object(m))
}

/// Decode a protobuf envelope into JSON, for the supported kinds.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let raw = body
        .strip_prefix(b"k8s\0")
        .ok_or("missing protobuf magic")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut inner: &[u8] = &[];
    for (n, f) in Reader::fields(raw).ok_or("bad envelope")? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (tn, tf) in Reader::fields(tm).ok_or("bad typeMeta")? {
                    if let Field::Bytes(x) = tf {
                        match tn {
                            1 => api_version = String::from_utf8_lossy(x).into_owned(),
                            2 => kind = String::from_utf8_lossy(x).into_owned(),
                            _ => {}
                        }
                    }
                }
            }
            (2, Field::Bytes(r)) => inner = r,
            _ => {}
        }
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    let fields = Reader::fields(inner).ok_or("bad object")?;
    let mut data = Map::new();
    let mut binary = Map::new();
    let mut string_data = Map::new();
    for (n, f) in fields {
        match (kind.as_str(), n, f) {
            (_, 1, Field::Bytes(x)) => {
                obj.insert("metadata".into(), object_meta(x).ok_or("bad metadata")?);
            }
            ("ConfigMap", 2, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, false).ok_or("bad data")?;
                data.insert(k, v);
            }
            ("ConfigMap", 3, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, true).ok_or("bad binaryData")?;
                binary.insert(k, v);
            }
            ("ConfigMap", 4, Field::Varint(v)) | ("Secret", 5, Field::Varint(v)) => {
                obj.insert("immutable".into(), json!(v != 0));
            }
            ("Secret", 2, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, true).ok_or("bad data")?;
                data.insert(k, v);
            }
            ("Secret", 3, Field::Bytes(x)) => {
                obj.insert("type".into(), s(x));
            }
            ("Secret", 4, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, false).ok_or("bad stringData")?;
                string_data.insert(k, v);
            }
            ("ServiceAccount", 4, Field::Varint(v)) => {
                obj.insert("automountServiceAccountToken".into(), json!(v != 0));
            }
            ("Namespace", _, _) | ("ServiceAccount", _, _) => {}
            (k, _, _) if !matches!(k, "ConfigMap" | "Secret") => {
                return Err(format!("protobuf encoding of {k} is not supported"));
            }
            _ => {}
        }
    }
    if !data.is_empty() {
        obj.insert("data".into(), Value::Object(data));
    }
    if !binary.is_empty() {
        obj.insert("binaryData".into(), Value::Object(binary));
    }
    if !string_data.is_empty() {
        obj.insert("stringData".into(), Value::Object(string_data));
    }
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![((n << 3) | 2) as u8, bytes.len() as u8];
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn decodes_configmap() {
        let meta = [
            field(1, b"cfg"),
            field(11, &[field(1, b"app"), field(2, b"x")].concat()),
        ]
        .concat();
        let cm = [
            field(1, &meta),
            field(2, &[field(1, b"k"), field(2, b"v")].concat()),
        ]
        .concat();
        let tm = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let env = [b"k8s\0".to_vec(), field(1, &tm), field(2, &cm)].concat();
        let v = decode(&env).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "labels": {"app": "x"}}, "data": {"k": "v"}})
        );
    }
}
