//! MinHash-LSH near-duplicate clustering: bands × rows chosen from the threshold, band buckets,
//! candidate pairs verified (by the signature estimate or exact Jaccard), union-find clusters in
//! which the first record wins.

use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

use crate::minhash::{MinHasher, Scratch, estimate_jaccard, jaccard};

/// How candidate pairs from the buckets are confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Every pair sharing a bucket is a duplicate (classic LSH; most recall, some false
    /// positives).
    None,
    /// The signatures' agreement must reach the threshold (default).
    Estimate,
    /// The exact Jaccard of the shingle sets must reach the threshold.
    Exact,
}

/// MinHash-LSH settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LshConfig {
    /// Jaccard similarity at which records count as near-duplicates.
    pub threshold: f64,
    /// Bands.
    pub bands: usize,
    /// Rows per band.
    pub rows: usize,
    /// How candidate pairs are confirmed.
    pub verify: Verify,
}

impl LshConfig {
    /// Bands and rows for `threshold` with `num_perm` functions: [`optimal_bands`] when every
    /// bucket collision counts ([`Verify::None`]), [`verified_bands`] when pairs are confirmed.
    pub fn for_threshold(threshold: f64, num_perm: usize, verify: Verify) -> LshConfig {
        let (bands, rows) = match verify {
            Verify::None => optimal_bands(threshold, num_perm),
            Verify::Estimate | Verify::Exact => verified_bands(threshold, num_perm),
        };
        LshConfig {
            threshold,
            bands,
            rows,
            verify,
        }
    }
}

/// The probability that two records of Jaccard `s` share at least one of `b` bands of `r` rows.
#[cfg(test)]
fn collide(s: f64, b: usize, r: usize) -> f64 {
    1.0 - (1.0 - s.powi(r as i32)).powi(b as i32)
}

/// The bands × rows split with `bands · rows <= num_perm` that minimises the equally weighted
/// sum of the false-positive area (collision probability `1 − (1 − s^r)^b` integrated over
/// `s < threshold`) and the false-negative area (its complement over `s >= threshold`): the
/// rule of datasketch and text-dedup (0.8 and 128 give 9 × 13).
pub fn optimal_bands(threshold: f64, num_perm: usize) -> (usize, usize) {
    best_split(threshold, num_perm, |_| 1.0)
}

/// The same rule applied to what a verified run reports: a pair of Jaccard `s` is a duplicate
/// when it shares a band and its signature estimate then reaches the threshold (probability
/// `P(Bin(num_perm, s) >= ⌈threshold · num_perm⌉)`). Verification removes most false
/// positives, so the best split has more, shorter bands: 0.8 and 128 give 16 × 8, which finds
/// 70% of pairs at Jaccard 0.82 where 9 × 13 then verification finds 37%.
pub fn verified_bands(threshold: f64, num_perm: usize) -> (usize, usize) {
    best_split(threshold, num_perm, |s| {
        estimate_reaches(s, threshold, num_perm)
    })
}

/// The split minimising the false-positive plus false-negative areas of the detection curve
/// `collide(s, b, r) · confirm(s)` (ties to the smallest `(b, r)`). For each row count the miss
/// probabilities `(1 − s^r)^b` of `b = 1, 2, …` are one multiplication per point apart: no power
/// is taken per split (taking them was 4 ms of a 110 ms `instill dedup`).
fn best_split(threshold: f64, num_perm: usize, confirm: impl Fn(f64) -> f64) -> (usize, usize) {
    // The confirmation curve does not depend on the split: sample it once.
    let below = sample(0.0, threshold, &confirm);
    let above = sample(threshold, 1.0, &confirm);
    let mut best = (1, num_perm.max(1));
    let mut best_err = f64::INFINITY;
    let (mut miss_below, mut miss_above) = (vec![1.0; below.len()], vec![1.0; above.len()]);
    for r in 1..=num_perm {
        let one_band = |points: &[(f64, f64)]| -> Vec<f64> {
            points
                .iter()
                .map(|&(s, _)| 1.0 - s.powi(r as i32))
                .collect()
        };
        let (band_below, band_above) = (one_band(&below), one_band(&above));
        miss_below.fill(1.0);
        miss_above.fill(1.0);
        for b in 1..=num_perm / r {
            for (m, x) in miss_below.iter_mut().zip(&band_below) {
                *m *= x;
            }
            for (m, x) in miss_above.iter_mut().zip(&band_above) {
                *m *= x;
            }
            let fp = simpson(&below, threshold, |k, c| (1.0 - miss_below[k]) * c);
            let fneg = simpson(&above, 1.0 - threshold, |k, c| {
                1.0 - (1.0 - miss_above[k]) * c
            });
            let err = 0.5 * fp + 0.5 * fneg;
            if err < best_err || (err == best_err && (b, r) < best) {
                best_err = err;
                best = (b, r);
            }
        }
    }
    best
}

/// Intervals of the composite Simpson's rule: ample for these smooth curves.
const INTERVALS: usize = 200;

/// `(s, confirm(s))` at the `INTERVALS + 1` points of `[a, b]`.
fn sample(a: f64, b: f64, confirm: &impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
    let h = (b - a) / INTERVALS as f64;
    (0..=INTERVALS)
        .map(|i| {
            let s = a + i as f64 * h;
            (s, confirm(s))
        })
        .collect()
}

/// Composite Simpson's rule of `f(k, confirm(s_k))` over the sampled points spanning `width`.
fn simpson(points: &[(f64, f64)], width: f64, f: impl Fn(usize, f64) -> f64) -> f64 {
    let last = points.len() - 1;
    let sum: f64 = points
        .iter()
        .enumerate()
        .map(|(i, &(_, c))| {
            let w = if i == 0 || i == last {
                1.0
            } else if i % 2 == 1 {
                4.0
            } else {
                2.0
            };
            w * f(i, c)
        })
        .sum();
    sum * width / last as f64 / 3.0
}

/// `P(Bin(n, s) >= k)` for the smallest `k` with `k / n >= threshold`: the chance that a pair of
/// Jaccard `s` has a signature estimate reaching the threshold. Summed in log space (n up to
/// thousands overflows the binomial coefficients).
fn estimate_reaches(s: f64, threshold: f64, n: usize) -> f64 {
    let k = (0..=n)
        .find(|&k| k as f64 / n as f64 >= threshold)
        .unwrap_or(n + 1);
    if s <= 0.0 {
        return if k == 0 { 1.0 } else { 0.0 };
    }
    if s >= 1.0 {
        return if k <= n { 1.0 } else { 0.0 };
    }
    let (ls, lq) = (s.ln(), (1.0 - s).ln());
    let mut log_choose = 0.0; // ln C(n, x), built up from x = 0
    let mut total = 0.0;
    for x in 0..=n {
        if x > 0 {
            log_choose += ((n - x + 1) as f64 / x as f64).ln();
        }
        if x >= k {
            total += (log_choose + x as f64 * ls + (n - x) as f64 * lq).exp();
        }
    }
    total.min(1.0)
}

/// What clustering decided for one record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterVerdict {
    /// Whether the record is the first of its cluster (or alone).
    pub kept: bool,
    /// The cluster: the index of its first record.
    pub cluster: usize,
    /// For a duplicate: the earlier record it matched best (or, when it only joined through
    /// later records, the cluster's first), and their similarity.
    pub dup_of: Option<(usize, f64)>,
    /// Whether the cluster has more than one record.
    pub in_cluster: bool,
}

/// Texts to sign, by index: held already, or built one at a time into a buffer of the thread
/// hashing them (the joined fields of a record), so that a large set's texts are never all held.
pub trait Texts: Sync {
    /// How many texts.
    fn len(&self) -> usize;

    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`th text, borrowed or written into `buf`.
    fn text<'s>(&'s self, i: usize, buf: &'s mut String) -> &'s str;
}

impl Texts for [&str] {
    fn len(&self) -> usize {
        <[&str]>::len(self)
    }

    fn text<'s>(&'s self, i: usize, _: &'s mut String) -> &'s str {
        self[i]
    }
}

/// Texts signed per parallel task.
const CHUNK: usize = 256;

/// The full signatures LSH verifies candidate pairs with: only those of the records that share
/// a bucket with another, computed again after bucketing. Most records share none, and every
/// signature held would be 512 bytes of fresh memory (26 MB for the 52k Alpaca records).
#[derive(Debug)]
struct Signatures {
    num_perm: usize,
    /// Per record, its signature's place in `values`, or `u32::MAX`.
    slot: Vec<u32>,
    values: Vec<u32>,
}

impl Signatures {
    /// The signatures of the texts `need` marks, in parallel.
    fn of(hasher: &MinHasher, texts: &(impl Texts + ?Sized), need: &[bool]) -> Signatures {
        let num_perm = hasher.num_perm().max(1);
        let wanted: Vec<usize> = (0..need.len()).filter(|&i| need[i]).collect();
        let mut slot = vec![u32::MAX; need.len()];
        for (k, &i) in wanted.iter().enumerate() {
            slot[i] = k as u32;
        }
        let mut values = vec![0u32; wanted.len() * num_perm];
        values
            .par_chunks_mut(num_perm * CHUNK)
            .zip(wanted.par_chunks(CHUNK))
            .for_each(|(sigs, records)| {
                let (mut scratch, mut buf) = (Scratch::default(), String::new());
                for (sig, &i) in sigs.chunks_mut(num_perm).zip(records) {
                    hasher.signature_with(texts.text(i, &mut buf), &mut scratch, sig);
                }
            });
        Signatures {
            num_perm,
            slot,
            values,
        }
    }

    /// Record `i`'s signature; empty when it was not computed (then it matches nothing).
    fn get(&self, i: usize) -> &[u32] {
        match self.slot.get(i) {
            Some(&k) if k != u32::MAX => {
                let k = k as usize;
                &self.values[k * self.num_perm..(k + 1) * self.num_perm]
            }
            _ => &[],
        }
    }
}

/// Every text's band keys (one u64 per band, bands one after another: band `b` of text `i` at
/// `b · n + i`, so that each band is sorted from one run of memory) and whether it has no
/// shingles, in parallel: each signature is made in a buffer of the thread and cut into bands
/// at once. `progress` hears the number of texts done since its last call.
fn band_keys(
    hasher: &MinHasher,
    texts: &(impl Texts + ?Sized),
    (bands, rows): (usize, usize),
    progress: &(dyn Fn(usize) + Sync),
) -> (Vec<u64>, Vec<bool>) {
    let n = texts.len();
    let num_perm = hasher.num_perm().max(1);
    let mut keys = vec![0u64; n * bands];
    // Per chunk of texts, its run of each band.
    let mut runs: Vec<Vec<&mut [u64]>> = (0..n.div_ceil(CHUNK)).map(|_| Vec::new()).collect();
    for band in keys.chunks_mut(n.max(1)) {
        for (c, run) in band.chunks_mut(CHUNK).enumerate() {
            runs[c].push(run);
        }
    }
    let empty = runs
        .into_par_iter()
        .enumerate()
        .flat_map_iter(|(c, mut runs)| {
            let (mut scratch, mut buf) = (Scratch::default(), String::new());
            let (mut sig, mut record) = (vec![0u32; num_perm], vec![0u64; bands]);
            let start = c * CHUNK;
            let flags: Vec<bool> = (start..(start + CHUNK).min(n))
                .map(|i| {
                    let text = texts.text(i, &mut buf);
                    let any = hasher.signature_with(text, &mut scratch, &mut sig);
                    cut_bands(&sig, rows, &mut record);
                    for (run, &key) in runs.iter_mut().zip(&record) {
                        run[i - start] = key;
                    }
                    !any
                })
                .collect();
            progress(flags.len());
            flags
        })
        .collect();
    (keys, empty)
}

/// `keys[b]` = the hash of band `b` of `sig` (`rows` values), salted with `b`.
fn cut_bands(sig: &[u32], rows: usize, keys: &mut [u64]) {
    for (b, key) in keys.iter_mut().enumerate() {
        let band = &sig[b * rows..(b + 1) * rows];
        let mut bytes = [0u8; 4 * 64];
        let len = band.len().min(64) * 4;
        for (k, v) in band.iter().take(64).enumerate() {
            bytes[k * 4..k * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        *key = xxh3_64(&bytes[..len]) ^ (b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Clusters `texts` by MinHash-LSH with `hasher`'s signatures (in parallel; `progress` hears
/// how many texts were signed). `exact_sets` (sorted shingle hashes per text) is needed only
/// for [`Verify::Exact`].
pub fn lsh_clusters(
    hasher: &MinHasher,
    texts: &(impl Texts + ?Sized),
    config: &LshConfig,
    exact_sets: Option<&[Vec<u64>]>,
    progress: &(dyn Fn(usize) + Sync),
) -> Vec<ClusterVerdict> {
    let n = texts.len();
    let rows = config.rows.max(1);
    let bands = config.bands.min(hasher.num_perm() / rows).max(1);
    let (keys, empty) = band_keys(hasher, texts, (bands, rows), progress);
    let prev = bucket_chains(&keys, &empty, bands);
    drop(keys);
    // Only records sharing a bucket are ever compared.
    let mut need = vec![false; n];
    for (at, &j) in prev.iter().enumerate() {
        if j != u32::MAX {
            need[at / bands] = true;
            need[j as usize] = true;
        }
    }
    let sigs = Signatures::of(hasher, texts, &need);
    let mut uf = UnionFind::new(n);
    let mut best: Vec<Option<(usize, f64)>> = vec![None; n];
    let mut seen_stamp = vec![u32::MAX; n];
    for i in 0..n {
        if empty[i] {
            continue;
        }
        for b in 0..bands {
            let mut j = prev[i * bands + b];
            while j != u32::MAX {
                let ju = j as usize;
                if seen_stamp[ju] != i as u32 {
                    seen_stamp[ju] = i as u32;
                    if uf.find(ju) != uf.find(i) || best[i].is_none() {
                        let sim = similarity(&sigs, config.verify, exact_sets, i, ju);
                        if config.verify == Verify::None || sim >= config.threshold {
                            uf.union(i, ju);
                            let better = match best[i] {
                                None => true,
                                Some((k, s)) => sim > s || (sim == s && ju < k),
                            };
                            if better {
                                best[i] = Some((ju, sim));
                            }
                        }
                    }
                }
                j = prev[ju * bands + b];
            }
        }
    }
    verdicts(&sigs, &mut uf, &best)
}

/// For every (record, band), records' bands back to back: the previous record (by index) with
/// a signature in the same bucket, or `u32::MAX`; walking these links visits a bucket's earlier
/// records latest first. `keys` are [`band_keys`]' (band after band). Each band is sorted by
/// (key, record) on its own, in parallel, in
/// buffers each thread reuses from band to band (fresh ones for each band faulted in 27 MB of
/// new pages on the 52k Alpaca records): no hash map of buckets is held.
fn bucket_chains(keys: &[u64], empty: &[bool], bands: usize) -> Vec<u32> {
    let n = empty.len();
    let links: Vec<Vec<(u32, u32)>> = (0..bands)
        .into_par_iter()
        .map_init(SortScratch::default, |scratch, b| {
            scratch.pairs.clear();
            let band = &keys[b * n..(b + 1) * n];
            scratch
                .pairs
                .extend((0..n).filter(|&i| !empty[i]).map(|i| (band[i], i as u32)));
            sort_pairs(scratch)
                .windows(2)
                .filter(|w| w[0].0 == w[1].0)
                .map(|w| (w[1].1, w[0].1))
                .collect()
        })
        .collect();
    let mut prev = vec![u32::MAX; n * bands];
    for (b, band) in links.iter().enumerate() {
        for &(i, j) in band {
            prev[i as usize * bands + b] = j;
        }
    }
    prev
}

/// Pairs per range of [`sort_pairs`]' scatter, about.
const PAIRS_PER_RANGE: usize = 32;

/// [`sort_pairs`]' buffers: the pairs to sort, and where they are scattered to.
#[derive(Debug, Default)]
struct SortScratch {
    pairs: Vec<(u64, u32)>,
    out: Vec<(u64, u32)>,
    starts: Vec<usize>,
    next: Vec<usize>,
}

/// `scratch.pairs` sorted (by key, then record). Keys are hashes, spread evenly: one counting
/// pass scatters the pairs by the key's top bits into ranges already in order among
/// themselves, each of a few dozen pairs, then each range is sorted while it sits in cache (a
/// comparison sort of the whole band took twice as long).
fn sort_pairs(scratch: &mut SortScratch) -> &[(u64, u32)] {
    let SortScratch {
        pairs,
        out,
        starts,
        next,
    } = scratch;
    let bits = (pairs.len() / PAIRS_PER_RANGE).max(1).ilog2().min(16);
    if bits == 0 {
        pairs.sort_unstable();
        return pairs;
    }
    let shift = 64 - bits;
    starts.clear();
    starts.resize((1 << bits) + 1, 0);
    for &(key, _) in pairs.iter() {
        starts[(key >> shift) as usize + 1] += 1;
    }
    for r in 1..starts.len() {
        starts[r] += starts[r - 1];
    }
    next.clear();
    next.extend_from_slice(starts);
    out.clear();
    out.resize(pairs.len(), (0, 0));
    for &pair in pairs.iter() {
        let r = (pair.0 >> shift) as usize;
        out[next[r]] = pair;
        next[r] += 1;
    }
    for range in starts.windows(2) {
        out[range[0]..range[1]].sort_unstable();
    }
    out
}

/// The similarity of records `i` and `j` a candidate pair is verified with: true Jaccard of the
/// shingle sets for [`Verify::Exact`] (when given), else the signatures' estimate.
fn similarity(
    sigs: &Signatures,
    verify: Verify,
    exact_sets: Option<&[Vec<u64>]>,
    i: usize,
    j: usize,
) -> f64 {
    match (verify, exact_sets) {
        (Verify::Exact, Some(sets)) => jaccard(&sets[i], &sets[j]),
        _ => estimate_jaccard(sigs.get(i), sigs.get(j)),
    }
}

/// Each record's verdict from the finished union-find and its best verified partner.
fn verdicts(
    sigs: &Signatures,
    uf: &mut UnionFind,
    best: &[Option<(usize, f64)>],
) -> Vec<ClusterVerdict> {
    let n = sigs.slot.len();
    let mut size = vec![0u32; n];
    for i in 0..n {
        size[uf.find(i)] += 1;
    }
    (0..n)
        .map(|i| {
            let root = uf.find(i);
            let kept = root == i;
            let dup_of = if kept {
                None
            } else {
                best[i].or_else(|| Some((root, estimate_jaccard(sigs.get(i), sigs.get(root)))))
            };
            ClusterVerdict {
                kept,
                cluster: root,
                dup_of,
                in_cluster: size[root] > 1,
            }
        })
        .collect()
}

/// Union-find whose root is always the smallest index of its set.
struct UnionFind {
    parent: Vec<u32>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n as u32).collect(),
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        let mut root = x;
        while self.parent[root] as usize != root {
            root = self.parent[root] as usize;
        }
        while self.parent[x] as usize != root {
            let up = self.parent[x] as usize;
            self.parent[x] = root as u32;
            x = up;
        }
        root
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[hi] = lo as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::minhash::Shingling;

    /// The scatter-then-sort gives a plain sort's order, duplicate keys and small inputs too.
    #[test]
    fn sort_pairs_matches_a_plain_sort() {
        for n in [0usize, 1, 31, 64, 1000, 70_000] {
            let mut x = 0x1234_5678_9ABC_DEF0u64;
            let pairs: Vec<(u64, u32)> = (0..n as u32)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Every third key repeats an earlier one's, so buckets hold several records.
                    (if i % 3 == 0 { x % 97 } else { x }, i)
                })
                .collect();
            let mut expected = pairs.clone();
            expected.sort_unstable();
            // Twice through one scratch, as a thread sorts band after band.
            let mut scratch = SortScratch::default();
            for _ in 0..2 {
                scratch.pairs.clone_from(&pairs);
                assert_eq!(sort_pairs(&mut scratch), expected, "{n} pairs");
            }
        }
    }

    #[test]
    fn bands_and_rows_match_datasketch() {
        assert_eq!(optimal_bands(0.8, 128), (9, 13));
        let (b, r) = optimal_bands(0.5, 128);
        assert!(b * r <= 128 && b > 9, "{b} x {r}");
    }

    /// The split as first computed: every split's curve from powers, in (b, r) order.
    fn direct_split(
        threshold: f64,
        num_perm: usize,
        confirm: impl Fn(f64) -> f64,
    ) -> (usize, usize) {
        let area = |a: f64, z: f64, f: &dyn Fn(f64) -> f64| {
            let h = (z - a) / INTERVALS as f64;
            let sum: f64 = (0..=INTERVALS)
                .map(|i| {
                    let w = if i == 0 || i == INTERVALS {
                        1.0
                    } else if i % 2 == 1 {
                        4.0
                    } else {
                        2.0
                    };
                    w * f(a + i as f64 * h)
                })
                .sum();
            sum * h / 3.0
        };
        let mut best = (1, num_perm);
        let mut best_err = f64::INFINITY;
        for b in 1..=num_perm {
            for r in 1..=num_perm / b {
                let fp = area(0.0, threshold, &|s| collide(s, b, r) * confirm(s));
                let fneg = area(threshold, 1.0, &|s| 1.0 - collide(s, b, r) * confirm(s));
                let err = 0.5 * fp + 0.5 * fneg;
                if err < best_err {
                    best_err = err;
                    best = (b, r);
                }
            }
        }
        best
    }

    /// Products of band misses choose the split that powers chose, verified or not.
    #[test]
    fn incremental_split_equals_the_direct_one() {
        for num_perm in [16, 64, 128, 256] {
            for t in [0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95] {
                assert_eq!(
                    optimal_bands(t, num_perm),
                    direct_split(t, num_perm, |_| 1.0),
                    "{t} {num_perm}"
                );
                assert_eq!(
                    verified_bands(t, num_perm),
                    direct_split(t, num_perm, |s| estimate_reaches(s, t, num_perm)),
                    "{t} {num_perm} verified"
                );
            }
        }
    }

    /// Verified runs take more, shorter bands; unverified ones keep datasketch's split.
    #[test]
    fn verified_runs_take_more_shorter_bands() {
        assert_eq!(verified_bands(0.8, 128), (16, 8));
        let c = |v| LshConfig::for_threshold(0.8, 128, v);
        assert_eq!((c(Verify::None).bands, c(Verify::None).rows), (9, 13));
        assert_eq!(
            (c(Verify::Estimate).bands, c(Verify::Estimate).rows),
            (16, 8)
        );
        assert_eq!((c(Verify::Exact).bands, c(Verify::Exact).rows), (16, 8));
        let (b, r) = verified_bands(0.9, 1024);
        assert!(b * r <= 1024 && b > 1 && r > 1, "{b} x {r}");
    }

    /// The binomial tail in log space agrees with the direct sum, and at the ends.
    #[test]
    fn estimate_tail_matches_the_binomial_sum() {
        // P(Bin(10, 0.5) >= 8) = (45 + 10 + 1) / 1024.
        assert!((estimate_reaches(0.5, 0.8, 10) - 56.0 / 1024.0).abs() < 1e-12);
        assert_eq!(estimate_reaches(1.0, 0.8, 128), 1.0);
        assert_eq!(estimate_reaches(0.0, 0.8, 128), 0.0);
        let p = estimate_reaches(0.85, 0.8, 128);
        assert!(p > 0.85 && p < 0.95, "{p}");
    }

    #[test]
    fn union_find_roots_are_first_indices() {
        let mut uf = UnionFind::new(6);
        uf.union(5, 3);
        uf.union(3, 4);
        uf.union(4, 1);
        assert_eq!(uf.find(5), 1);
        assert_eq!(uf.find(0), 0);
    }

    #[test]
    fn clusters_near_duplicates_and_keeps_the_first() {
        let base = "The quick brown fox jumps over the lazy dog near the river bank today";
        let texts = [
            base,
            "Completely different text about cooking pasta with tomato sauce and basil",
            "The quick brown fox jumps over the lazy dog near the river bank today!",
            "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。",
            "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少",
            "",
        ];
        let hasher = MinHasher::new(128, Shingling::Char(5), 1);
        for verify in [Verify::None, Verify::Estimate, Verify::Exact] {
            let sets: Vec<Vec<u64>> = texts.iter().map(|t| Shingling::Char(5).set(t)).collect();
            let config = LshConfig::for_threshold(0.8, 128, verify);
            let v = lsh_clusters(&hasher, &texts[..], &config, Some(&sets), &|_| {});
            let kept: Vec<bool> = v.iter().map(|c| c.kept).collect();
            assert_eq!(
                kept,
                vec![true, true, false, true, false, true],
                "{verify:?}"
            );
            assert_eq!(v[2].dup_of.map(|d| d.0), Some(0));
            assert_eq!(v[4].cluster, 3);
            assert!(v[0].in_cluster && !v[1].in_cluster);
        }
    }
}

#[cfg(test)]
mod recall_tests {
    use super::*;
    use crate::minhash::Shingling;

    /// P(Bin(n, p) >= k).
    fn binomial_tail(n: u32, k: u32, p: f64) -> f64 {
        let mut total = 0.0;
        for x in k..=n {
            let mut c = 1.0f64;
            for i in 0..x {
                c *= f64::from(n - i) / f64::from(i + 1);
            }
            total += c * p.powi(x as i32) * (1.0 - p).powi((n - x) as i32);
        }
        total
    }

    /// A labelled set from real data: 3,000 Alpaca records plus 600 near-duplicates made by
    /// deleting or swapping a few words (as ../shared/bench/make_synthetic.py does). Brute force
    /// over every (record, earlier record) pair gives the truth. LSH cannot find every pair near
    /// the threshold (at Jaccard s a pair shares a band with probability 1 − (1 − s^13)^9 and its
    /// estimate reaches 0.8 with the binomial probability P(Bin(128, s) ≥ 103)); the recall must
    /// reach what that theory predicts for the true positives' similarities, less 0.05, and at
    /// least 90% for pairs of Jaccard 0.9 or more. Every reported duplicate must be a
    /// near-duplicate (true Jaccard within 0.15 of the threshold).
    #[test]
    fn lsh_recall_and_precision_against_brute_force() {
        let data: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(crate::rouge_tests::shared("data/alpaca_data.json")).unwrap(),
        )
        .unwrap();
        let mut texts: Vec<String> = data.as_array().unwrap()[..3000]
            .iter()
            .map(|r| {
                format!(
                    "{} {} {}",
                    r["instruction"].as_str().unwrap(),
                    r["input"].as_str().unwrap(),
                    r["output"].as_str().unwrap()
                )
            })
            .collect();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut rand = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for _ in 0..600 {
            let src = rand(3000) as usize;
            let mut words: Vec<String> = texts[src].split(' ').map(str::to_string).collect();
            let edits = 1 + rand(4) as usize;
            for _ in 0..edits {
                if words.len() < 3 {
                    break;
                }
                let p = rand(words.len() as u64 - 1) as usize;
                if rand(2) == 0 {
                    words.remove(p);
                } else {
                    words.swap(p, p + 1);
                }
            }
            texts.push(words.join(" "));
        }
        let shingling = Shingling::Word(3);
        let threshold = 0.8;
        let sets: Vec<Vec<u64>> = texts.iter().map(|t| shingling.set(t)).collect();
        // Truth: a record is a near-duplicate when some earlier record reaches the threshold; its
        // best similarity decides how findable it is.
        let best: Vec<f64> = (0..texts.len())
            .map(|i| {
                (0..i)
                    .map(|j| jaccard(&sets[i], &sets[j]))
                    .fold(0.0, f64::max)
            })
            .collect();
        let truth: Vec<bool> = best.iter().map(|&b| b >= threshold).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let hasher = MinHasher::new(128, shingling, 1);
        let config = LshConfig::for_threshold(threshold, 128, Verify::Estimate);
        let verdicts = lsh_clusters(&hasher, &refs[..], &config, None, &|_| {});
        let positives = truth.iter().filter(|&&t| t).count();
        let found = (0..texts.len())
            .filter(|&i| truth[i] && !verdicts[i].kept)
            .count();
        let recall = found as f64 / positives as f64;
        assert!(positives > 200, "{positives}");
        let detect = |s: f64| {
            let band = 1.0 - (1.0 - s.powi(config.rows as i32)).powi(config.bands as i32);
            band * binomial_tail(128, 103, s)
        };
        let expected = best
            .iter()
            .filter(|&&b| b >= threshold)
            .map(|&b| detect(b))
            .sum::<f64>()
            / positives as f64;
        assert!(
            recall >= expected - 0.05,
            "recall {recall} ({found} of {positives}), theory {expected}"
        );
        let high: Vec<usize> = (0..texts.len()).filter(|&i| best[i] >= 0.9).collect();
        let high_found = high.iter().filter(|&&i| !verdicts[i].kept).count();
        assert!(
            high_found as f64 >= 0.9 * high.len() as f64,
            "{high_found} of {}",
            high.len()
        );
        for (i, v) in verdicts.iter().enumerate() {
            if let Some((j, _)) = v.dup_of {
                let true_j = jaccard(&sets[i], &sets[j]);
                assert!(
                    true_j >= threshold - 0.15,
                    "{i} ~ {j}: true Jaccard {true_j}"
                );
            }
        }
    }
}
