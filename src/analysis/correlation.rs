//! Rank and linear correlation, and Cohen's kappa (unweighted and quadratic-weighted).

/// Average ranks (1-based), ties sharing the mean of their ranks.
pub fn ranks(xs: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    idx.sort_by(|&a, &b| {
        xs[a]
            .partial_cmp(&xs[b])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut r = vec![0.0; xs.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && xs[idx[j + 1]] == xs[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Pearson correlation; NaN when either side is constant or there are fewer than 2 pairs.
pub fn pearson(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len().min(ys.len());
    if n < 2 {
        return f64::NAN;
    }
    let (mx, my) = (
        xs[..n].iter().sum::<f64>() / n as f64,
        ys[..n].iter().sum::<f64>() / n as f64,
    );
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (dx, dy) = (xs[i] - mx, ys[i] - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    sxy / (sxx * syy).sqrt()
}

/// Spearman's rank correlation (Pearson on average ranks, so ties are handled).
pub fn spearman(xs: &[f64], ys: &[f64]) -> f64 {
    pearson(&ranks(xs), &ranks(ys))
}

/// Cohen's kappa between two raters' categorical labels. NaN with no pairs, or when one
/// rater gives a single label and the other differs (1 when both give identical labels).
pub fn cohen_kappa<T: PartialEq + Clone>(a: &[T], b: &[T]) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return f64::NAN;
    }
    let mut cats: Vec<T> = Vec::new();
    for x in a[..n].iter().chain(b[..n].iter()) {
        if !cats.contains(x) {
            cats.push(x.clone());
        }
    }
    // A rater who gives every item one label makes kappa 0 whatever the other does: the
    // agreement is not measurable, so it is null rather than a 0 that reads as a finding.
    let constant = |x: &[T]| x[1..n].iter().all(|v| *v == x[0]);
    if constant(a) || constant(b) {
        return if a[..n] == b[..n] { 1.0 } else { f64::NAN };
    }
    let po = (0..n).filter(|&i| a[i] == b[i]).count() as f64 / n as f64;
    let pe: f64 = cats
        .iter()
        .map(|c| {
            let pa = a[..n].iter().filter(|x| *x == c).count() as f64 / n as f64;
            let pb = b[..n].iter().filter(|x| *x == c).count() as f64 / n as f64;
            pa * pb
        })
        .sum();
    if pe == 1.0 {
        return if po == 1.0 { 1.0 } else { f64::NAN };
    }
    (po - pe) / (1.0 - pe)
}

/// Cohen's kappa with quadratic weights for ordinal labels (e.g. totals 3..12): a
/// disagreement by `d` steps counts `d²/(k−1)²` against agreement, over the `k` categories
/// from the smallest to the largest label seen. NaN with no pairs, a single category, or a
/// rater who gives a single label.
pub fn weighted_kappa(a: &[i64], b: &[i64]) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return f64::NAN;
    }
    let lo = a[..n].iter().chain(&b[..n]).copied().min().unwrap_or(0);
    let hi = a[..n].iter().chain(&b[..n]).copied().max().unwrap_or(0);
    let k = (hi - lo + 1) as usize;
    // As for Cohen's kappa: one rater with a single label leaves nothing to measure.
    let constant = |x: &[i64]| x[1..n].iter().all(|v| *v == x[0]);
    if k < 2 || constant(a) || constant(b) {
        return f64::NAN;
    }
    let mut obs = vec![vec![0.0; k]; k];
    let (mut ra, mut rb) = (vec![0.0; k], vec![0.0; k]);
    // Counts, not shares, and integer weights (i − j)²: the sums stay exact, so a kappa of
    // 0 prints as 0 and not as 4e-16. The common factors cancel in the ratio.
    for i in 0..n {
        let (x, y) = ((a[i] - lo) as usize, (b[i] - lo) as usize);
        obs[x][y] += 1.0;
        ra[x] += 1.0;
        rb[y] += 1.0;
    }
    let w = |i: usize, j: usize| (i as f64 - j as f64).powi(2);
    let (mut num, mut den) = (0.0, 0.0);
    for i in 0..k {
        for j in 0..k {
            num += w(i, j) * obs[i][j] * n as f64;
            den += w(i, j) * ra[i] * rb[j];
        }
    }
    if den == 0.0 {
        return f64::NAN;
    }
    1.0 - num / den
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_textbook() {
        // Wikipedia's IQ / hours of TV example: rho = -29/165.
        let iq = [
            106.0, 86.0, 100.0, 101.0, 99.0, 103.0, 97.0, 113.0, 112.0, 110.0,
        ];
        let tv = [7.0, 0.0, 27.0, 50.0, 28.0, 29.0, 20.0, 12.0, 6.0, 17.0];
        assert!((spearman(&iq, &tv) - (-29.0 / 165.0)).abs() < 1e-9);
        assert_eq!(ranks(&[10.0, 20.0, 20.0, 5.0]), vec![2.0, 3.5, 3.5, 1.0]);
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn kappa_textbook() {
        // Wikipedia's example: 50 proposals, 20 yes-yes, 5 yes-no, 10 no-yes, 15 no-no: 0.4.
        let mut a = Vec::new();
        let mut b = Vec::new();
        for (x, y, n) in [
            ("y", "y", 20),
            ("y", "n", 5),
            ("n", "y", 10),
            ("n", "n", 15),
        ] {
            for _ in 0..n {
                a.push(x);
                b.push(y);
            }
        }
        assert!((cohen_kappa(&a, &b) - 0.4).abs() < 1e-12);
        assert_eq!(cohen_kappa(&[1, 2, 3], &[1, 2, 3]), 1.0);
    }

    #[test]
    fn weighted_kappa_textbook() {
        // Two categories: quadratic weights are plain disagreement, so it equals Cohen's.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (x, y, n) in [(1, 1, 20), (1, 0, 5), (0, 1, 10), (0, 0, 15)] {
            for _ in 0..n {
                a.push(x);
                b.push(y);
            }
        }
        assert!((weighted_kappa(&a, &b) - 0.4).abs() < 1e-12);
        // Three categories by hand: pairs (0,0) (1,1) (2,2) (0,1) (1,2) (2,0).
        // Observed disagreement: (1/4 + 1/4 + 1) / 6 = 0.25. Margins are uniform (1/3 each):
        // expected disagreement = Σ w_ij / 9 = (4·1/4 + 2·1) / 9 = 1/3. kappa = 1 − 0.75.
        let a = [0, 1, 2, 0, 1, 2];
        let b = [0, 1, 2, 1, 2, 0];
        assert!((weighted_kappa(&a, &b) - 0.25).abs() < 1e-12);
        // Near misses cost less than far misses.
        let near = weighted_kappa(&[3, 6, 9, 12], &[4, 6, 9, 11]);
        let far = weighted_kappa(&[3, 6, 9, 12], &[12, 6, 9, 3]);
        assert!(near > 0.9 && far < 0.0, "{near} {far}");
        assert!(weighted_kappa(&[5, 5], &[5, 5]).is_nan());
        // One judge gives a single label: kappa would be 0 whatever the other does, so null.
        assert!(weighted_kappa(&[5; 40], &[4; 40]).is_nan());
        assert!(weighted_kappa(&[3, 4, 5, 6], &[3, 3, 3, 3]).is_nan());
        assert!(cohen_kappa(&[3, 4, 5, 6], &[3, 3, 3, 3]).is_nan());
        // Exact sums: a chance-level table gives exactly 0.
        assert_eq!(weighted_kappa(&[1, 1, 2, 2], &[1, 2, 1, 2]), 0.0);
    }
}
