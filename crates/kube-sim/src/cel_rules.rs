//! `x-kubernetes-validations` CEL rules, evaluated with the `cel` crate.
//!
//! `self` and `oldSelf` are bound to the JSON values converted to CEL values.
//! The strings and lists extension libraries are loaded; Kubernetes-specific
//! libraries (`quantity`, `url`, `ip`, `cidr`, `format`, authorizer) are not.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cel::objects::Key;
use cel::{Context, Env, Value as CelValue};
use serde_json::Value;

fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        let _ = env.add_extension(cel::extensions::strings);
        let _ = env.add_extension(cel::extensions::lists);
        let _ = env.add_extension(cel::extensions::math);
        Arc::new(env)
    })
    .clone()
}

/// JSON -> CEL.
pub fn to_cel(v: &Value) -> CelValue {
    match v {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                CelValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                CelValue::UInt(u)
            } else {
                CelValue::Float(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(a) => CelValue::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(o) => {
            let m: HashMap<Key, CelValue> = o
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            m.into()
        }
    }
}

fn run(expr: &str, self_v: &Value, old: Option<&Value>) -> Result<CelValue, String> {
    let env = env();
    let program = env
        .compile(expr)
        .map_err(|e| format!("compilation failed: {e}"))?;
    let mut ctx = Context::with_env(env);
    ctx.add_variable_from_value("self", to_cel(self_v));
    if let Some(o) = old {
        ctx.add_variable_from_value("oldSelf", to_cel(o));
    }
    program.execute(&ctx).map_err(|e| e.to_string())
}

/// Evaluate a rule: Ok(true) when it holds.
pub fn eval_rule(rule: &str, self_v: &Value, old: Option<&Value>) -> Result<bool, String> {
    match run(rule, self_v, old)? {
        CelValue::Bool(b) => Ok(b),
        other => Err(format!("rule did not evaluate to a bool: {other:?}")),
    }
}

/// Evaluate a messageExpression to a string.
pub fn eval_message(expr: &str, self_v: &Value, old: Option<&Value>) -> Result<String, String> {
    match run(expr, self_v, old)? {
        CelValue::String(s) => Ok((*s).clone()),
        other => Err(format!(
            "messageExpression did not evaluate to a string: {other:?}"
        )),
    }
}

/// Whether a rule references `oldSelf` (a transition rule).
pub fn is_transition_rule(rule: &str) -> bool {
    rule.contains("oldSelf")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn basic_rules() {
        let v = json!({"a": "x", "interval": "45s", "items": [1, 2, 3]});
        assert!(eval_rule("has(self.a) != has(self.b)", &v, None).unwrap());
        assert!(eval_rule("duration(self.interval) >= duration('30s')", &v, None).unwrap());
        assert!(!eval_rule("duration(self.interval) >= duration('60s')", &v, None).unwrap());
        assert!(
            eval_rule(
                "self.items.all(i, i > 0) && self.items.exists_one(i, i == 2)",
                &v,
                None
            )
            .unwrap()
        );
        assert!(
            eval_rule(
                "self.items.map(i, i * 2).filter(i, i > 2).size() == 2",
                &v,
                None
            )
            .unwrap()
        );
        assert!(
            eval_rule(
                "self.a.startsWith('x') && self.a.lowerAscii() == 'x'",
                &v,
                None
            )
            .unwrap()
        );
        assert!(eval_rule("self == oldSelf", &json!("a"), Some(&json!("a"))).unwrap());
        assert_eq!(eval_message("'got ' + self.a", &v, None).unwrap(), "got x");
    }
}
