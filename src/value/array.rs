//! One-dimensional arrays in PostgreSQL's binary format (`array_send` /
//! `array_recv`, src/backend/utils/adt/arrayfuncs.c): how the router passes
//! a column of the shards' rows (values already in binary format) to the
//! final step of a gather as one parameter.
//!
//! Format: int32 number of dimensions (1, or 0 for an empty array), int32
//! flags (1 if any element is NULL), uint32 element type OID; per
//! dimension int32 length and int32 lower bound (1); then per element an
//! int32 byte length (-1 for NULL) and the element's binary value.

/// The array type of built-in element type `elem` (`typarray` in
/// PostgreSQL's `pg_type.dat`); None for types without a known one (array
/// types themselves, user-defined types).
pub fn array_type(elem: u32) -> Option<u32> {
    Some(match elem {
        16 => 1000,   // bool
        17 => 1001,   // bytea
        18 => 1002,   // "char"
        19 => 1003,   // name
        20 => 1016,   // int8
        21 => 1005,   // int2
        23 => 1007,   // int4
        25 => 1009,   // text
        26 => 1028,   // oid
        114 => 199,   // json
        142 => 143,   // xml
        600 => 1017,  // point
        650 => 651,   // cidr
        700 => 1021,  // float4
        701 => 1022,  // float8
        790 => 791,   // money
        829 => 1040,  // macaddr
        869 => 1041,  // inet
        1042 => 1014, // bpchar
        1043 => 1015, // varchar
        1082 => 1182, // date
        1083 => 1183, // time
        1114 => 1115, // timestamp
        1184 => 1185, // timestamptz
        1186 => 1187, // interval
        1266 => 1270, // timetz
        1560 => 1561, // bit
        1562 => 1563, // varbit
        1700 => 1231, // numeric
        2950 => 2951, // uuid
        3614 => 3643, // tsvector
        3802 => 3807, // jsonb
        3904 => 3905, // int4range
        3906 => 3907, // numrange
        3908 => 3909, // tsrange
        3910 => 3911, // tstzrange
        3912 => 3913, // daterange
        3926 => 3927, // int8range
        _ => return None,
    })
}

/// Builds a one-dimensional array of binary element values.
#[derive(Debug, Clone)]
pub struct ArrayBuilder {
    elem: u32,
    len: usize,
    has_null: bool,
    /// Element length words and values.
    data: Vec<u8>,
}

impl ArrayBuilder {
    /// An empty array of element type `elem`.
    pub fn new(elem: u32) -> ArrayBuilder {
        ArrayBuilder {
            elem,
            len: 0,
            has_null: false,
            data: Vec::new(),
        }
    }

    /// Appends one element (None = NULL), given in binary format.
    pub fn push(&mut self, value: Option<&[u8]>) {
        match value {
            Some(v) => {
                self.data.extend_from_slice(&(v.len() as i32).to_be_bytes());
                self.data.extend_from_slice(v);
            }
            None => {
                self.has_null = true;
                self.data.extend_from_slice(&(-1i32).to_be_bytes());
            }
        }
        self.len += 1;
    }

    /// Bytes held so far.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// The array in binary format.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.data.len());
        let dims: i32 = if self.len == 0 { 0 } else { 1 };
        out.extend_from_slice(&dims.to_be_bytes());
        out.extend_from_slice(&(self.has_null as i32).to_be_bytes());
        out.extend_from_slice(&self.elem.to_be_bytes());
        if self.len > 0 {
            out.extend_from_slice(&(self.len as i32).to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&self.data);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_layout() {
        let mut a = ArrayBuilder::new(23);
        a.push(Some(&7i32.to_be_bytes()));
        a.push(None);
        assert_eq!(
            a.finish(),
            [
                &[0, 0, 0, 1][..],
                &[0, 0, 0, 1],
                &[0, 0, 0, 23],
                &[0, 0, 0, 2],
                &[0, 0, 0, 1],
                &[0, 0, 0, 4, 0, 0, 0, 7],
                &[0xff, 0xff, 0xff, 0xff],
            ]
            .concat()
        );
        assert_eq!(
            ArrayBuilder::new(25).finish(),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25]
        );
        assert_eq!(array_type(1700), Some(1231));
        assert_eq!(array_type(1007), None, "no arrays of arrays");
    }
}
