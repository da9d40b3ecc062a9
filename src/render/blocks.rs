//! Where a fleet body is written: as plain text, or compressed with the pieces that depend
//! on a few rows kept from one body to the next: one block cache for every body, keyed by what
//! the body calls its sections.
//!
//! A body's layout is written once, against `Sink`, so the plain and the gzip body cannot
//! disagree. Rows go in blocks by id range (ids are handed out by a counter, so a block is
//! a stable, contiguous run of the sorted fleet); a block's text depends only on its rows,
//! and a row is replaced, never mutated, when its session changes. A gzip body after one
//! change therefore compresses one block per section again, not the fleet, and `/metrics`
//! as text renders one block per metric family again.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use bytes::Bytes;

use crate::fleet::Row;
use crate::render::gzip::Segment;

/// Ids per block: about 30 KB of list JSON, enough for deflate to find the rows' repeats.
const BLOCK_IDS: i64 = 128;

/// The fleet's rows in blocks of one id range each, in order; empty ranges are skipped.
pub fn blocks<'a>(rows: impl Iterator<Item = &'a Arc<Row>>) -> Vec<Vec<&'a Arc<Row>>> {
    let mut out: Vec<Vec<&Arc<Row>>> = Vec::new();
    let mut current = None;
    for row in rows {
        let range = row.view.id.div_euclid(BLOCK_IDS);
        if current != Some(range) {
            current = Some(range);
            out.push(Vec::new());
        }
        out.last_mut().expect("pushed above").push(row);
    }
    out
}

/// A body being written; `S` names its sections, which tell apart the blocks of one body that
/// hold the same rows (a metric family; a list's first block, the only one without a comma).
pub trait Sink<S> {
    /// Text written as it comes.
    fn text(&mut self, text: &str);
    /// Text that `render` writes from `rows` alone.
    fn block(&mut self, section: S, rows: &[&Arc<Row>], render: impl FnOnce(&mut String));
}

/// The body as text.
#[derive(Default)]
pub struct Plain(pub String);

impl<S> Sink<S> for Plain {
    fn text(&mut self, text: &str) {
        self.0.push_str(text);
    }

    fn block(&mut self, _: S, _: &[&Arc<Row>], render: impl FnOnce(&mut String)) {
        render(&mut self.0);
    }
}

/// Where a block sits in a body: its section and its id range (a body has one block there
/// at most).
type Place<S> = (S, i64);

/// A block kept where it sat: the rows it was made from, each named by its serial number
/// (never reused, unlike an address), and what it became. Looked up by place and checked by
/// comparing serials, so an unchanged block costs no allocation and no hashing of its rows.
struct Kept<P> {
    serials: Box<[u64]>,
    piece: P,
}

/// What a block becomes in a body: its text, or its text compressed.
pub trait Piece: Clone {
    fn make(text: String) -> Self;
}

impl Piece for Bytes {
    fn make(text: String) -> Self {
        Bytes::from(text)
    }
}

impl Piece for Arc<Segment> {
    fn make(text: String) -> Self {
        Arc::new(Segment::compress(text.as_bytes()))
    }
}

fn rendered<P: Piece>(render: impl FnOnce(&mut String)) -> P {
    let mut text = String::new();
    render(&mut text);
    P::make(text)
}

/// The blocks of the last body written, for the next one to reuse.
pub struct Blocks<S, P> {
    kept: HashMap<Place<S>, Kept<P>>,
    /// Blocks made so far, for tests and benchmarks.
    made: u64,
}

impl<S, P> Default for Blocks<S, P> {
    fn default() -> Self {
        Self {
            kept: HashMap::new(),
            made: 0,
        }
    }
}

impl<S, P> Blocks<S, P> {
    pub fn made(&self) -> u64 {
        self.made
    }
}

/// A body made of pieces, each block's piece reused from the last body when its rows are
/// the same.
pub struct Reusing<'a, S, P> {
    /// Reused and updated, or `None` to make every block (a body served once).
    blocks: Option<&'a mut Blocks<S, P>>,
    /// This body's blocks: what the next body may reuse.
    used: HashMap<Place<S>, Kept<P>>,
    pending: String,
    pieces: Vec<P>,
}

/// The body compressed, piece by piece.
pub type Gzip<'a, S> = Reusing<'a, S, Arc<Segment>>;
/// The body as text, sharing the blocks of the last one where they are unchanged.
pub type Text<'a, S> = Reusing<'a, S, Bytes>;

impl<'a, S, P: Piece> Reusing<'a, S, P> {
    pub fn new(blocks: Option<&'a mut Blocks<S, P>>) -> Self {
        Self {
            blocks,
            used: HashMap::new(),
            pending: String::new(),
            pieces: Vec::new(),
        }
    }

    fn flush_text(&mut self) {
        if !self.pending.is_empty() {
            self.pieces.push(P::make(std::mem::take(&mut self.pending)));
        }
    }

    /// The body's pieces in order; the blocks it did not use are forgotten.
    pub fn pieces(mut self) -> Vec<P> {
        self.flush_text();
        if let Some(blocks) = self.blocks {
            blocks.kept = self.used;
        }
        self.pieces
    }
}

impl<S> Gzip<'_, S> {
    /// The body as one piece.
    pub fn finish(self) -> Segment {
        Segment::join(self.pieces().iter().map(|p| &**p))
    }
}

impl<S: Copy + Eq + Hash, P: Piece> Sink<S> for Reusing<'_, S, P> {
    fn text(&mut self, text: &str) {
        self.pending.push_str(text);
    }

    fn block(&mut self, section: S, rows: &[&Arc<Row>], render: impl FnOnce(&mut String)) {
        self.flush_text();
        let Some(blocks) = self.blocks.as_deref_mut() else {
            self.pieces.push(rendered(render));
            return;
        };
        let place = (
            section,
            rows.first().map_or(0, |r| r.view.id.div_euclid(BLOCK_IDS)),
        );
        let kept = blocks
            .kept
            .remove(&place)
            .filter(|k| k.serials.iter().eq(rows.iter().map(|r| &r.serial)))
            .unwrap_or_else(|| {
                blocks.made += 1;
                Kept {
                    serials: rows.iter().map(|r| r.serial).collect(),
                    piece: rendered(render),
                }
            });
        self.pieces.push(kept.piece.clone());
        self.used.insert(place, kept);
    }
}
