//! The statement as conditions see it: refused when too large or too deep, then converted from
//! JSON to CEL values once, borrowing its strings.

use std::{collections::HashMap, io};

use cel::{
    common::{
        types::{CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt},
        value::{CowVal, Val},
    },
    context::VariableResolver,
};

use super::{ConditionFailure, MAX_STATEMENT_BYTES, MAX_STATEMENT_DEPTH};

/// Counts the bytes serde_json writes, failing once there are too many.
struct ByteCounter {
    bytes: usize,
}

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes += buf.len();
        if self.bytes > MAX_STATEMENT_BYTES {
            return Err(io::Error::other("statement too large"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The statement converted for CEL, borrowing its strings; `predicate` is found in it on each
/// lookup rather than converted twice.
pub(super) struct Bindings<'a> {
    statement: Box<dyn Val + 'a>,
    /// What `predicate` is when the statement has none.
    empty: CelMap<'static>,
}

impl<'a> Bindings<'a> {
    /// Converts `statement`, refusing it beyond [`MAX_STATEMENT_BYTES`] serialized (counted
    /// before anything is converted) and [`MAX_STATEMENT_DEPTH`] levels of nesting.
    pub(super) fn new(statement: &'a serde_json::Value) -> Result<Self, ConditionFailure> {
        let mut counter = ByteCounter { bytes: 0 };
        if serde_json::to_writer(&mut counter, statement).is_err() {
            return Err(ConditionFailure::TooLarge {
                reason: format!("larger than {MAX_STATEMENT_BYTES} bytes serialized"),
            });
        }
        Ok(Self {
            statement: to_val(statement, 0)?,
            empty: CelMap::from(HashMap::new()),
        })
    }

    fn predicate(&self) -> &(dyn Val + 'a) {
        self.statement
            .downcast_ref::<CelMap>()
            .and_then(|statement| statement.inner().get(&CelMapKey::from("predicate")))
            .map_or(&self.empty, |predicate| predicate.as_ref())
    }
}

impl VariableResolver for Bindings<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "statement" => Some(CowVal::Borrowed(self.statement.as_ref())),
            "predicate" => Some(CowVal::Borrowed(self.predicate())),
            _ => None,
        }
    }
}

/// Converts JSON to CEL values: integers that fit are `int`, larger ones `uint`, the rest
/// `double`.
fn to_val(value: &serde_json::Value, depth: usize) -> Result<Box<dyn Val + '_>, ConditionFailure> {
    use serde_json::Value as Json;
    let nested = |depth: usize| {
        if depth >= MAX_STATEMENT_DEPTH {
            return Err(ConditionFailure::TooLarge {
                reason: format!("nested deeper than {MAX_STATEMENT_DEPTH} levels"),
            });
        }
        Ok(depth + 1)
    };
    Ok(match value {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Box::new(CelInt::from(i)),
            (None, Some(u)) => Box::new(CelUInt::from(u)),
            (None, None) => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Json::String(s) => Box::new(CelString::from(s.as_str())),
        Json::Array(items) => {
            let depth = nested(depth)?;
            let items = items
                .iter()
                .map(|item| to_val(item, depth))
                .collect::<Result<Vec<_>, _>>()?;
            Box::new(CelList::from(items))
        }
        Json::Object(entries) => {
            let depth = nested(depth)?;
            let entries = entries
                .iter()
                .map(|(key, value)| Ok((CelMapKey::from(key.as_str()), to_val(value, depth)?)))
                .collect::<Result<HashMap<_, _>, ConditionFailure>>()?;
            Box::new(CelMap::from(entries))
        }
    })
}
