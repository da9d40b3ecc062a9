//! The list bodies of the seed document: `{"success":true,"message":...,"data":[...],"count":N}`,
//! assembled from the rows' ready JSON, as text or as one gzip member.

use std::sync::Arc;

use bytes::Bytes;

use super::blocks::{Blocks, Gzip, Plain, Sink, blocks};
use super::gzip::{self, Segment};
use crate::fleet::{List, Row};

/// The sections of a list body: the first block is the only one that starts without a comma.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListBlock {
    First,
    Later,
}

/// The blocks of a list kept from one compressed body to the next.
pub type ListBlocks = Blocks<ListBlock, Arc<Segment>>;

pub fn plain_list<'a>(list: List, rows: impl Iterator<Item = &'a Arc<Row>>) -> Bytes {
    let mut sink = Plain(String::with_capacity(64 * 1024));
    write_list(&mut sink, list, rows);
    Bytes::from(sink.0)
}

/// `plain_list` as one gzip member, reusing `blocks` where their rows are unchanged.
pub fn gzip_list<'a>(
    list: List,
    rows: impl Iterator<Item = &'a Arc<Row>>,
    blocks: Option<&mut ListBlocks>,
) -> Bytes {
    let mut sink = Gzip::new(blocks);
    write_list(&mut sink, list, rows);
    gzip::member_bytes(&sink.finish())
}

fn write_list<'a>(sink: &mut impl Sink<ListBlock>, list: List, rows: impl Iterator<Item = &'a Arc<Row>>) {
    sink.text(r#"{"success":true,"message":"#);
    sink.text(&serde_json::to_string(list.message()).expect("a string serializes"));
    sink.text(r#","data":["#);
    let kept: Vec<&Arc<Row>> = rows.filter(|r| list.keeps(&r.view)).collect();
    for (i, block) in blocks(kept.iter().copied()).iter().enumerate() {
        let first = i == 0;
        let section = if first { ListBlock::First } else { ListBlock::Later };
        sink.block(section, block, |out| {
            for (j, row) in block.iter().enumerate() {
                if j > 0 || !first {
                    out.push(',');
                }
                out.push_str(&row.json);
            }
        });
    }
    sink.text(r#"],"count":"#);
    sink.text(itoa::Buffer::new().format(kept.len()));
    sink.text("}");
}
