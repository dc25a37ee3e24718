//! Next-token log-probabilities for many prompts that share prefixes, each shared prefix run
//! once.
//!
//! A judge's probability queries come in families: every prompt shares the judge's
//! instructions, the prompts of one question share the question, the two pairs that show the
//! same answer first share that answer, and the criteria of one answer share everything but
//! the last line. [`PrefixScorer`] runs a batch of prompts as a tree of KV caches: the
//! longest prefix of the whole batch once (continuing the previous query's cache where it
//! can), then each prefix that several prompts share beyond it once, level by level, then
//! each prompt's own tail; the tails of a batch's earlier round (an answer's previous
//! criterion) are kept and continued.
//!
//! Splitting a prompt anywhere gives the same bits as one pass (tested in
//! `long_prompts_match_an_unchunked_reference_token_by_token`), and the kernels compute each
//! row the same way whatever rows run beside it ([`Transformer::rows_independent`]), so a
//! prompt's log-probabilities never depend on the batch it came in or where its cache was
//! split. When the kernels are not row-independent, prompts run one at a time.
//!
//! [`Transformer::rows_independent`]: crate::model::Transformer::rows_independent

use crate::error::Result;
use crate::model::{KvCache, Model};
use candle_core::{DType, Tensor};

/// Most memory the caches kept between rounds may hold.
const RETAINED_BYTES: usize = 1 << 30;

/// Most memory the caches of finished generations may hold (a judge's replies, which its
/// re-asks continue).
const GENERATED_BYTES: usize = 1 << 30;

/// Most memory the caches of one batch's shared prefixes may hold at once, by default.
pub const NODE_BYTES: usize = 512 << 20;

/// Shortest shared prompt prefix worth keeping instead of starting a fresh cache.
const MIN_REUSE: usize = 8;

/// Shortest prefix shared by several prompts of a batch (beyond what the whole batch shares)
/// that runs once for them: shorter ones are not worth a copy of the cache.
const MIN_SPLIT: usize = 16;

/// Where a prompt, or a shared prefix, continues from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// The prefix the whole batch shares.
    Base,
    /// A shared prefix run earlier in this batch (an index into the tree's nodes).
    Node(usize),
    /// A cache kept from the previous round (an index into the retained caches).
    Retained(usize),
}

/// A prefix several prompts share: positions `start..end`, continuing `parent`.
#[derive(Debug)]
struct Node {
    parent: Source,
    start: usize,
    end: usize,
    level: usize,
}

/// One prompt's own tail: positions `start..`, continuing `source`.
#[derive(Debug)]
struct Leaf {
    prompt: usize,
    source: Source,
    start: usize,
}

/// The KV caches a scorer keeps from one query, or one batch, to the next.
#[derive(Debug)]
pub struct PrefixScorer {
    /// The last prompt run alone (or the last batch's shared prefix): its ids, cache and
    /// next-token log-probabilities.
    last: Option<(Vec<u32>, KvCache, Vec<f32>)>,
    /// The caches of the last batch's prompts: the next round continues each from the
    /// longest it shares.
    retained: Vec<(Vec<u32>, KvCache)>,
    /// The caches of finished generations (prompt and reply), oldest first: a re-ask,
    /// which repeats the transcript, continues its own.
    generated: std::collections::VecDeque<(Vec<u32>, KvCache)>,
    /// Positions run through the model so far.
    ran: usize,
    /// Most memory one batch's shared prefixes may hold at once.
    node_bytes: usize,
}

impl Default for PrefixScorer {
    fn default() -> Self {
        Self {
            last: None,
            retained: Vec::new(),
            generated: std::collections::VecDeque::new(),
            ran: 0,
            node_bytes: NODE_BYTES,
        }
    }
}

impl PrefixScorer {
    /// An empty scorer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the most memory one batch's shared prefixes may hold at once ([`NODE_BYTES`] by
    /// default); beyond it the batch runs in groups (see [`PrefixScorer::logprobs_many`]).
    pub fn with_node_budget(mut self, bytes: usize) -> Self {
        self.node_bytes = bytes;
        self
    }

    /// Positions run through the model so far (prompt tokens not served from a cache).
    pub fn positions_run(&self) -> usize {
        self.ran
    }

    /// Log-probabilities of the next token after `ids`: only the tokens after the longest
    /// prefix shared with the previous query run through the model.
    pub fn logprobs(&mut self, model: &mut Model, ids: &[u32]) -> Result<Vec<f32>> {
        model.check_fits(ids.len())?;
        // Taken out while it is extended: a forward pass that fails half-way leaves no cache
        // behind that disagrees with its ids.
        if let Some((cached, mut cache, logprobs)) = self.last.take() {
            if ids == cached.as_slice() {
                let lp = logprobs.clone();
                self.last = Some((cached, cache, logprobs));
                return Ok(lp);
            }
            // At least one token must run to produce logits.
            let keep = common_prefix(ids, &cached).min(ids.len() - 1);
            if keep >= MIN_REUSE {
                cache.truncate(keep);
                self.ran += ids.len() - keep;
                let logits = model
                    .transformer()
                    .forward(&ids[keep..], &mut cache, false)?;
                let lp = log_softmax(&logits.squeeze(0)?)?;
                self.last = Some((ids.to_vec(), cache, lp.clone()));
                return Ok(lp);
            }
        }
        self.ran += ids.len();
        let (cache, logits) = model.prefill(ids)?;
        let lp = log_softmax(&Tensor::new(logits.as_slice(), &candle_core::Device::Cpu)?)?;
        self.last = Some((ids.to_vec(), cache, lp.clone()));
        Ok(lp)
    }

    /// Runs a generation's prompt: continues the longest prefix of it that a kept cache holds
    /// (a finished generation's, a batch's, the last query's), else starts a fresh cache.
    /// Returns the prompt's cache, the last position's logits (the same bits as a fresh
    /// prefill gives) and how many of its positions came from a kept cache. A model whose
    /// kernels are not row-independent always starts fresh: continuing a cache would change
    /// its bits.
    pub(crate) fn prefill(
        &mut self,
        model: &mut Model,
        ids: &[u32],
    ) -> Result<(KvCache, Vec<f32>, usize)> {
        model.check_fits(ids.len())?;
        if !model.transformer().rows_independent() {
            self.ran += ids.len();
            let (cache, logits) = model.prefill(ids)?;
            return Ok((cache, logits, 0));
        }
        let held = self
            .generated
            .iter()
            .chain(&self.retained)
            .map(|(r, c)| (r.as_slice(), c))
            .chain(self.last.iter().map(|(r, c, _)| (r.as_slice(), c)));
        let best = held
            .map(|(r, c)| (common_prefix(r, ids).min(c.len()).min(ids.len() - 1), c))
            .filter(|(n, _)| *n >= MIN_REUSE)
            .max_by_key(|(n, _)| *n);
        let Some((n, source)) = best else {
            self.ran += ids.len();
            let (cache, logits) = model.prefill(ids)?;
            return Ok((cache, logits, 0));
        };
        let mut cache = source.deep_copy()?;
        cache.truncate(n);
        self.ran += ids.len() - n;
        let logits = model.transformer().forward(&ids[n..], &mut cache, false)?;
        Ok((cache, logits.squeeze(0)?.to_vec1()?, n))
    }

    /// Keeps a finished generation's cache (`ids`: the positions it holds) for later
    /// prompts that extend it; the oldest are dropped beyond a bound.
    pub(crate) fn keep_generated(&mut self, model: &mut Model, ids: Vec<u32>, cache: KvCache) {
        if !model.transformer().rows_independent()
            || ids.len() != cache.len()
            || cache.bytes() > GENERATED_BYTES
        {
            return;
        }
        self.generated.push_back((ids, cache));
        while self.generated.iter().map(|(_, c)| c.bytes()).sum::<usize>() > GENERATED_BYTES {
            self.generated.pop_front();
        }
    }

    /// Log-probabilities of the next token after each of `prompts` (each must fit the
    /// model's context), handed to `on_done` by index as they are ready. Shared prefixes run
    /// once (see the module's documentation); up to `max_batch` continuations run together
    /// in one forward pass. A prompt's result is what [`PrefixScorer::logprobs`] gives for it
    /// alone. A model error in a batched pass leaves its prompts to run one at a time, which
    /// reports each prompt's own error.
    pub fn logprobs_many(
        &mut self,
        model: &mut Model,
        prompts: &[&[u32]],
        max_batch: usize,
        on_done: &mut dyn FnMut(usize, Result<Vec<f32>>) -> Result<()>,
    ) -> Result<()> {
        let max_batch = max_batch.max(1);
        let all: Vec<usize> = (0..prompts.len()).collect();
        // One prompt at a time (`max_batch` 1) takes the same path in groups of one.
        if prompts.len() < 2 || !model.transformer().rows_independent() {
            return self.one_by_one(model, prompts, &all, on_done);
        }
        let shortest = prompts.iter().map(|p| p.len()).min().unwrap_or(0);
        let shared = prompts
            .iter()
            .fold(shortest, |n, p| n.min(common_prefix(p, prompts[0])));
        let keep = shared.min(shortest.saturating_sub(1));
        if keep < MIN_REUSE {
            self.retained.clear();
            return self.one_by_one(model, prompts, &all, on_done);
        }
        // The prefix the whole batch shares, continuing the previous query's cache.
        let base = match self.logprobs(model, &prompts[0][..keep]) {
            Ok(_) => self.last.as_ref().and_then(|(_, c, _)| c.deep_copy().ok()),
            Err(_) => None,
        };
        let Some(base) = base else {
            self.retained.clear();
            return self.one_by_one(model, prompts, &all, on_done);
        };
        let retained = std::mem::take(&mut self.retained);
        let batch = Batch {
            prompts,
            keep,
            base: &base,
            retained: &retained,
            max_batch,
        };
        self.run_tree(model, &batch, &all, on_done)
    }

    /// The prompts `which` of a batch, as a tree (see [`PrefixScorer::logprobs_many`]).
    /// Every shared prefix's cache lives until the tails under it have run: when they would
    /// hold more than the budget ([`PrefixScorer::with_node_budget`]), the prompts run in
    /// groups, one per prefix the whole group shares (a question), each group's tree in
    /// turn; a group under one prefix runs it once and goes down a level. Only prompts
    /// under no shared prefix continue the batch's common prefix. The numbers are the same
    /// either way.
    fn run_tree(
        &mut self,
        model: &mut Model,
        batch: &Batch<'_>,
        which: &[usize],
        on_done: &mut dyn FnMut(usize, Result<Vec<f32>>) -> Result<()>,
    ) -> Result<()> {
        let Batch {
            keep,
            base,
            retained,
            max_batch,
            ..
        } = *batch;
        let prompts: Vec<&[u32]> = which.iter().map(|&i| batch.prompts[i]).collect();
        let prompts = prompts.as_slice();
        let chunk = model.transformer().prefill_chunk();
        let (mut nodes, mut leaves) = plan(prompts, keep, retained, chunk);
        let per_position = base.bytes() / base.len().max(1);
        let held: usize = nodes.iter().map(|n| n.end * per_position).sum();
        if held > self.node_bytes {
            // Group the prompts by the first shared prefix above them.
            let mut groups: Vec<(Source, Vec<usize>)> = Vec::new();
            for leaf in &leaves {
                let top = top_node(&nodes, leaf.source);
                match groups.iter_mut().find(|(t, _)| *t == top) {
                    Some((_, g)) => g.push(which[leaf.prompt]),
                    None => groups.push((top, vec![which[leaf.prompt]])),
                }
            }
            if groups.len() > 1 {
                for (_, group) in groups {
                    self.run_tree(model, batch, &group, on_done)?;
                }
                return Ok(());
            }
            // One group under one shared prefix: run that prefix once and go down a level,
            // with it as the group's common prefix.
            if let Some((Source::Node(t), _)) = groups.first() {
                let end = nodes[*t].end;
                let job = Job {
                    source: Source::Base,
                    start: keep,
                    tokens: prompts[0].get(keep..end).unwrap_or_default(),
                };
                self.ran += job.tokens.len();
                return match run_jobs(model, &[job], 1, chunk, base, &[], retained) {
                    Ok(mut out) if !out.is_empty() => {
                        let (cache, _) = out.swap_remove(0);
                        let deeper = Batch {
                            keep: end,
                            base: &cache,
                            ..*batch
                        };
                        self.run_tree(model, &deeper, which, on_done)
                    }
                    _ => self.one_by_one(model, batch.prompts, which, on_done),
                };
            }
            nodes.clear();
            for leaf in leaves
                .iter_mut()
                .filter(|l| matches!(l.source, Source::Node(_)))
            {
                leaf.source = Source::Base;
                leaf.start = keep;
            }
        }

        // The shared prefixes, level by level; their last logits are not needed.
        let mut caches: Vec<Option<KvCache>> = (0..nodes.len()).map(|_| None).collect();
        let levels = nodes.iter().map(|n| n.level + 1).max().unwrap_or(0);
        for level in 0..levels {
            let jobs: Vec<usize> = (0..nodes.len())
                .filter(|&i| nodes[i].level == level)
                .collect();
            let segments: Vec<Job<'_>> = jobs
                .iter()
                .map(|&i| {
                    let n = &nodes[i];
                    // Each job's prompt: any prompt under it holds the same positions.
                    let p = leaves
                        .iter()
                        .find(|l| reaches(&nodes, l.source, i))
                        .map(|l| prompts[l.prompt])
                        .unwrap_or_default();
                    Job {
                        source: n.parent,
                        start: n.start,
                        tokens: p.get(n.start..n.end).unwrap_or_default(),
                    }
                })
                .collect();
            self.ran += segments.iter().map(|j| j.tokens.len()).sum::<usize>();
            let done = run_jobs(model, &segments, max_batch, chunk, base, &caches, retained);
            match done {
                Ok(out) => {
                    for (&i, (cache, _)) in jobs.iter().zip(out) {
                        caches[i] = Some(cache);
                    }
                }
                Err(_) => {
                    // Leave every prompt to the one-at-a-time path.
                    let rest: Vec<usize> = leaves.iter().map(|l| which[l.prompt]).collect();
                    return self.one_by_one(model, batch.prompts, &rest, on_done);
                }
            }
        }

        // Each prompt's own tail, in groups: a failed group runs one at a time.
        let jobs: Vec<Job<'_>> = leaves
            .iter()
            .map(|l| Job {
                source: l.source,
                start: l.start,
                tokens: &prompts[l.prompt][l.start..],
            })
            .collect();
        let order: Vec<usize> = (0..leaves.len()).collect();
        for group in order.chunks(max_batch) {
            let group_jobs: Vec<Job<'_>> = group.iter().map(|&i| jobs[i]).collect();
            self.ran += group_jobs.iter().map(|j| j.tokens.len()).sum::<usize>();
            let out = run_jobs(
                model,
                &group_jobs,
                max_batch,
                chunk,
                base,
                &caches,
                retained,
            );
            let Ok(out) = out else {
                let failed: Vec<usize> = group.iter().map(|&i| which[leaves[i].prompt]).collect();
                self.one_by_one(model, batch.prompts, &failed, on_done)?;
                continue;
            };
            for (&i, (cache, logits)) in group.iter().zip(out) {
                let prompt = leaves[i].prompt;
                on_done(which[prompt], log_softmax(&logits))?;
                // Bounded, so a large model does not keep gigabytes of caches between
                // rounds; the last round's caches are dropped as this one's are kept.
                let held: usize = self.retained.iter().map(|(_, c)| c.bytes()).sum();
                if held + cache.bytes() <= RETAINED_BYTES {
                    self.retained.push((prompts[prompt].to_vec(), cache));
                }
            }
        }
        Ok(())
    }

    /// The prompts `which`, one after the other.
    fn one_by_one(
        &mut self,
        model: &mut Model,
        prompts: &[&[u32]],
        which: &[usize],
        on_done: &mut dyn FnMut(usize, Result<Vec<f32>>) -> Result<()>,
    ) -> Result<()> {
        for &i in which {
            let r = self.logprobs(model, prompts[i]);
            on_done(i, r)?;
        }
        Ok(())
    }
}

/// A batch of prompts behind their common prefix (`keep` positions, cached in `base`).
#[derive(Clone, Copy)]
struct Batch<'a> {
    prompts: &'a [&'a [u32]],
    keep: usize,
    base: &'a KvCache,
    retained: &'a [(Vec<u32>, KvCache)],
    max_batch: usize,
}

/// The first shared prefix above `source` (the batch's own prefix for a prompt under none).
fn top_node(nodes: &[Node], source: Source) -> Source {
    let mut at = source;
    while let Source::Node(i) = at {
        match nodes[i].parent {
            Source::Node(_) => at = nodes[i].parent,
            _ => return at,
        }
    }
    at
}

/// A run of tokens continuing a cache: `tokens` go at positions `start..`.
#[derive(Clone, Copy)]
struct Job<'a> {
    source: Source,
    start: usize,
    tokens: &'a [u32],
}

/// Runs `jobs`, each on its own copy of its source cache cut at its start: those no longer
/// than a prefill chunk together, up to `max_batch` and a chunk's rows per pass
/// ([`passes`]), the others alone. Returns each job's cache and last-position logits, in
/// order.
fn run_jobs(
    model: &mut Model,
    jobs: &[Job<'_>],
    max_batch: usize,
    chunk: usize,
    base: &KvCache,
    nodes: &[Option<KvCache>],
    retained: &[(Vec<u32>, KvCache)],
) -> Result<Vec<(KvCache, Tensor)>> {
    let copy = |j: &Job<'_>| -> Result<KvCache> {
        let source = match j.source {
            Source::Base => Some(base),
            Source::Node(i) => nodes.get(i).and_then(Option::as_ref),
            Source::Retained(i) => retained.get(i).map(|(_, c)| c),
        };
        let source = source.ok_or_else(|| {
            crate::error::Error::Candle(candle_core::Error::Msg(
                "prefix scorer: a job's source cache is missing".into(),
            ))
        })?;
        let mut c = source.deep_copy()?;
        c.truncate(j.start);
        Ok(c)
    };
    let mut out: Vec<Option<(KvCache, Tensor)>> = (0..jobs.len()).map(|_| None).collect();
    let (short, long): (Vec<usize>, Vec<usize>) =
        (0..jobs.len()).partition(|&i| jobs[i].tokens.len() <= chunk);
    let lens: Vec<usize> = short.iter().map(|&i| jobs[i].tokens.len()).collect();
    for range in passes(&lens, max_batch, chunk) {
        let group = &short[range];
        let mut caches = group
            .iter()
            .map(|&i| copy(&jobs[i]))
            .collect::<Result<Vec<_>>>()?;
        let segments: Vec<&[u32]> = group.iter().map(|&i| jobs[i].tokens).collect();
        let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
        let logits = model.transformer().forward_segments(&segments, &mut refs)?;
        for (row, (&i, cache)) in group.iter().zip(caches).enumerate() {
            out[i] = Some((cache, logits.get(row)?));
        }
    }
    for i in long {
        let mut cache = copy(&jobs[i])?;
        let logits = model
            .transformer()
            .forward(jobs[i].tokens, &mut cache, false)?;
        out[i] = Some((cache, logits.squeeze(0)?));
    }
    Ok(out.into_iter().flatten().collect())
}

/// Consecutive jobs of `lens` tokens (each at most `chunk`) grouped into passes of at most
/// `max_batch` jobs and `chunk` rows, as index ranges in order. A pass of more rows than a
/// chunk computes no faster, and its buffers outgrow what the heap keeps between passes
/// ([`crate::model::heap::MMAP_THRESHOLD`]): each would be mapped, faulted in and zeroed by
/// the kernel again (measured on the 1.5B judge's pairwise prompts: 8.9 million page faults
/// in 80 s of judging, passes of up to 2,300 rows).
fn passes(lens: &[usize], max_batch: usize, chunk: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut rows) = (0, 0);
    for (i, &n) in lens.iter().enumerate() {
        if i > start && (i - start >= max_batch.max(1) || rows + n > chunk) {
            out.push(start..i);
            (start, rows) = (i, 0);
        }
        rows += n;
    }
    if start < lens.len() {
        out.push(start..lens.len());
    }
    out
}

/// The tree of a batch: shared prefixes beyond `keep` (nodes, parents before children) and
/// each prompt's tail (leaves). A prompt continues the retained cache that reaches furthest
/// when it reaches further than the tree; nodes no prompt continues are left out.
fn plan(
    prompts: &[&[u32]],
    keep: usize,
    retained: &[(Vec<u32>, KvCache)],
    chunk: usize,
) -> (Vec<Node>, Vec<Leaf>) {
    let mut sorted: Vec<usize> = (0..prompts.len()).collect();
    sorted.sort_by(|&a, &b| prompts[a].cmp(prompts[b]).then(a.cmp(&b)));
    let next: Vec<usize> = sorted
        .windows(2)
        .map(|w| common_prefix(prompts[w[0]], prompts[w[1]]))
        .collect();
    let mut nodes = Vec::new();
    let mut leaves = Vec::new();
    split(
        prompts,
        &sorted,
        &next,
        (0, sorted.len()),
        (keep, Source::Base, 0),
        &mut nodes,
        &mut leaves,
    );
    // A retained cache that reaches further than the tree (an answer's previous criterion).
    for leaf in &mut leaves {
        let p = prompts[leaf.prompt];
        let best = retained
            .iter()
            .enumerate()
            .map(|(i, (r, c))| (common_prefix(r, p).min(p.len() - 1).min(c.len()), i))
            .filter(|&(n, _)| n > leaf.start && p.len() - n <= chunk)
            .max_by_key(|&(n, i)| (n, std::cmp::Reverse(i)));
        if let Some((n, i)) = best {
            leaf.source = Source::Retained(i);
            leaf.start = n;
        }
    }
    // Keep only the nodes some leaf continues, renumbered in order.
    let mut used = vec![false; nodes.len()];
    for leaf in &leaves {
        let mut at = leaf.source;
        while let Source::Node(i) = at {
            used[i] = true;
            at = nodes[i].parent;
        }
    }
    let mut renumber = vec![usize::MAX; nodes.len()];
    let mut kept = Vec::new();
    for (i, node) in nodes.into_iter().enumerate() {
        if used[i] {
            renumber[i] = kept.len();
            kept.push(node);
        }
    }
    let map = |s: Source| match s {
        Source::Node(i) => Source::Node(renumber[i]),
        other => other,
    };
    for node in &mut kept {
        node.parent = map(node.parent);
    }
    for leaf in &mut leaves {
        leaf.source = map(leaf.source);
    }
    (kept, leaves)
}

/// Splits the sorted prompts `range` (all sharing `depth` positions, continuing `parent`)
/// into runs that share at least [`MIN_SPLIT`] more: each run becomes a node and is split
/// again, and the prompts in no run become leaves.
fn split(
    prompts: &[&[u32]],
    sorted: &[usize],
    next: &[usize],
    range: (usize, usize),
    at: (usize, Source, usize),
    nodes: &mut Vec<Node>,
    leaves: &mut Vec<Leaf>,
) {
    let (depth, parent, level) = at;
    let mut i = range.0;
    while i < range.1 {
        let mut j = i + 1;
        let mut common = usize::MAX;
        while j < range.1 && next[j - 1] >= depth + MIN_SPLIT {
            common = common.min(next[j - 1]);
            j += 1;
        }
        // At least one position of each prompt is left to run.
        let end = sorted[i..j]
            .iter()
            .map(|&p| prompts[p].len() - 1)
            .fold(common, usize::min);
        if j - i >= 2 && end >= depth + MIN_SPLIT {
            nodes.push(Node {
                parent,
                start: depth,
                end,
                level,
            });
            let id = Source::Node(nodes.len() - 1);
            split(
                prompts,
                sorted,
                next,
                (i, j),
                (end, id, level + 1),
                nodes,
                leaves,
            );
        } else {
            leaves.extend(sorted[i..j].iter().map(|&prompt| Leaf {
                prompt,
                source: parent,
                start: depth,
            }));
        }
        i = j;
    }
}

/// True when `source` is node `target` or continues it.
fn reaches(nodes: &[Node], source: Source, target: usize) -> bool {
    let mut at = source;
    while let Source::Node(i) = at {
        if i == target {
            return true;
        }
        at = nodes[i].parent;
    }
    false
}

/// Positions two prompts share from the start.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Log-probabilities of one row of logits: one function for every path, so that a prompt
/// gives the same numbers however it reached the model.
fn log_softmax(logits: &Tensor) -> Result<Vec<f32>> {
    Ok(candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, 0)?.to_vec1()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves_of(prompts: &[Vec<u32>], keep: usize) -> (Vec<Node>, Vec<Leaf>) {
        let refs: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
        plan(&refs, keep, &[], 512)
    }

    #[test]
    fn a_pass_holds_at_most_a_chunk_of_rows_and_max_batch_jobs() {
        // Rows: 300 + 200 fit a chunk of 512, 100 more do not; a job of a whole chunk runs
        // alone; three short jobs stop at `max_batch`.
        let lens = [300, 200, 100, 512, 10, 10, 10, 10];
        assert_eq!(passes(&lens, 3, 512), vec![0..2, 2..3, 3..4, 4..7, 7..8]);
        assert_eq!(passes(&lens, 1, 512).len(), lens.len());
        assert!(passes(&[], 4, 512).is_empty());
        // Every job is in exactly one pass, in order, whatever the limits.
        for (b, c) in [(2, 512), (8, 512), (64, 4096)] {
            let ranges = passes(&lens, b, c);
            assert_eq!(ranges.first().map(|r| r.start), Some(0));
            assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
            assert_eq!(ranges.last().map(|r| r.end), Some(lens.len()));
            assert!(ranges.iter().all(|r| r.len() <= b && !r.is_empty()));
        }
    }

    #[test]
    fn pairs_that_show_the_same_answer_first_share_it_once() {
        // A shared head (10), a question (20 per question), a first answer (30), a second
        // answer (30): two questions, and per question the pairs (1,2), (1,3), (2,1), (3,1).
        let seq = |start: u32, n: usize| (start..start + n as u32).collect::<Vec<u32>>();
        let mut prompts = Vec::new();
        for q in 0..2u32 {
            for (a, b) in [(1u32, 2u32), (1, 3), (2, 1), (3, 1)] {
                let p = [
                    seq(0, 10),
                    seq(1000 * (q + 1), 20),
                    seq(100_000 + 100 * a + 10_000 * q, 30),
                    seq(200_000 + 100 * b + 10_000 * q, 30),
                ]
                .concat();
                prompts.push(p);
            }
        }
        let (nodes, leaves) = leaves_of(&prompts, 10);
        // Per question: its text (one node), and answer 1 shown first (one node under it).
        assert_eq!(nodes.len(), 4, "{nodes:?}");
        let questions: Vec<&Node> = nodes.iter().filter(|n| n.level == 0).collect();
        assert_eq!(questions.len(), 2);
        assert!(questions.iter().all(|n| (n.start, n.end) == (10, 30)));
        let answers: Vec<&Node> = nodes.iter().filter(|n| n.level == 1).collect();
        assert!(answers.iter().all(|n| (n.start, n.end) == (30, 60)));
        // Every prompt is a leaf once; the pairs led by answer 1 run only their second answer.
        let mut seen: Vec<usize> = leaves.iter().map(|l| l.prompt).collect();
        seen.sort();
        assert_eq!(seen, (0..8).collect::<Vec<_>>());
        for l in &leaves {
            let led_by_one = l.prompt % 4 < 2;
            assert_eq!(l.start, if led_by_one { 60 } else { 30 }, "{l:?}");
        }
        // Positions run beyond the shared head: the two questions (2 × 20), answer 1 first
        // under each (2 × 30) and the tails (4 × 30 after answer 1, 4 × 60 after the
        // question), 460 against the 8 × 80 = 640 the prompts hold.
        let tails: usize = leaves
            .iter()
            .map(|l| prompts[l.prompt].len() - l.start)
            .sum();
        assert_eq!(tails, 4 * 30 + 4 * 60);
        assert_eq!(2 * 20 + 2 * 30 + tails, 460);
    }

    #[test]
    fn a_prompt_that_is_a_prefix_of_another_still_runs_a_token() {
        let a: Vec<u32> = (0..40).collect();
        let b: Vec<u32> = (0..60).collect();
        let c: Vec<u32> = (0..58).chain(500..520).collect();
        let (nodes, leaves) = leaves_of(&[a.clone(), b, c], 8);
        for l in &leaves {
            let len = [40, 60, 78][l.prompt];
            assert!(l.start < len, "{l:?}");
        }
        // a, b and c share 40 positions; a must run its last one, so the node stops at 39;
        // b and c share 19 more.
        assert_eq!(nodes.len(), 2, "{nodes:?}");
        assert_eq!((nodes[0].start, nodes[0].end), (8, 39));
        assert_eq!((nodes[1].start, nodes[1].end), (39, 58));
        assert_eq!(nodes[1].parent, Source::Node(0));
        let _ = a;
    }
}
