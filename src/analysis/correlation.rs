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

/// Krippendorff's alpha for interval data: `units[u]` holds the values the judges gave unit
/// `u` (an answer), missing ones left out. A unit with fewer than two values cannot be
/// paired and is left out. `1 − D_o / D_e`: the squared differences within units against
/// those between every two pairable values. 1 is perfect agreement, 0 agreement at chance,
/// below 0 systematic disagreement. NaN with fewer than two pairable values, or none that
/// differ.
pub fn krippendorff_alpha_interval(units: &[Vec<f64>]) -> f64 {
    let pairable: Vec<&Vec<f64>> = units.iter().filter(|u| u.len() >= 2).collect();
    let all: Vec<f64> = pairable.iter().flat_map(|u| u.iter().copied()).collect();
    let n = all.len() as f64;
    if all.len() < 2 {
        return f64::NAN;
    }
    // Σ over ordered pairs i ≠ j of (x_i − x_j)² is 2·m·Σ(x − mean)² for m values.
    let spread = |xs: &[f64]| {
        let m = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / m;
        2.0 * m * xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>()
    };
    let observed: f64 = pairable
        .iter()
        .map(|u| spread(u) / (u.len() as f64 - 1.0))
        .sum::<f64>()
        / n;
    let expected = spread(&all) / (n * (n - 1.0));
    if expected <= 0.0 {
        return f64::NAN;
    }
    1.0 - observed / expected
}

/// Fleiss' kappa for nominal verdicts (A, B, tie): `units[u]` holds the category each judge
/// gave unit `u` (a pair of answers). A unit with fewer than two verdicts is left out; with
/// unequal numbers of verdicts per unit, each unit's agreement is over its own pairs of
/// verdicts and the chance agreement over all verdicts. NaN with no pairable unit, or when
/// every verdict is the same category (agreement is then not measurable).
pub fn fleiss_kappa(units: &[Vec<usize>]) -> f64 {
    let pairable: Vec<&Vec<usize>> = units.iter().filter(|u| u.len() >= 2).collect();
    if pairable.is_empty() {
        return f64::NAN;
    }
    let k = pairable
        .iter()
        .flat_map(|u| u.iter())
        .max()
        .map_or(0, |m| m + 1);
    let mut totals = vec![0f64; k];
    let mut agreement = 0.0;
    for u in &pairable {
        let mut counts = vec![0f64; k];
        for &c in u.iter() {
            counts[c] += 1.0;
            totals[c] += 1.0;
        }
        let m = u.len() as f64;
        agreement += counts.iter().map(|c| c * (c - 1.0)).sum::<f64>() / (m * (m - 1.0));
    }
    let observed = agreement / pairable.len() as f64;
    let all: f64 = totals.iter().sum();
    let chance: f64 = totals.iter().map(|t| (t / all).powi(2)).sum();
    if chance >= 1.0 {
        return f64::NAN;
    }
    (observed - chance) / (1.0 - chance)
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

    #[test]
    fn krippendorff_alpha_by_hand() {
        // Units [1, 2], [3, 3], [2, 4] and one unpairable [5]: six pairable values.
        // D_o = (2 + 0 + 8) / 6 = 5/3 (ordered pairs within units, each over m_u − 1);
        // D_e = 2·6·Σ(x − 2.5)² / (6·5) = 2·6·5.5 / 30 = 2.2; alpha = 1 − (5/3)/2.2.
        let units = vec![vec![1.0, 2.0], vec![3.0, 3.0], vec![2.0, 4.0], vec![5.0]];
        let a = krippendorff_alpha_interval(&units);
        assert!((a - (1.0 - (5.0 / 3.0) / 2.2)).abs() < 1e-12, "{a}");
        assert!((a - 0.242_424_242).abs() < 1e-8);
        // Perfect agreement; agreement only at chance level is about 0; no spread is NaN.
        let same = vec![vec![1.0, 1.0, 1.0], vec![4.0, 4.0, 4.0], vec![2.0, 2.0]];
        assert_eq!(krippendorff_alpha_interval(&same), 1.0);
        let crossed = vec![vec![1.0, 4.0], vec![4.0, 1.0]];
        assert!(krippendorff_alpha_interval(&crossed) < 0.0);
        assert!(krippendorff_alpha_interval(&[vec![3.0, 3.0]]).is_nan());
        assert!(krippendorff_alpha_interval(&[vec![3.0]]).is_nan());
    }

    #[test]
    fn fleiss_kappa_textbook() {
        // Fleiss (1971) as tabulated on Wikipedia: 10 subjects, 14 raters, 5 categories;
        // P̄ = 0.378, P̄e = 0.213, kappa = 0.210.
        let table = [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ];
        let units: Vec<Vec<usize>> = table
            .iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .flat_map(|(c, &n)| std::iter::repeat_n(c, n))
                    .collect()
            })
            .collect();
        let k = fleiss_kappa(&units);
        assert!((k - 0.209_930_704).abs() < 1e-8, "{k}");
        // Two raters: Fleiss' kappa is Scott's pi. Here po = 0.5, p = (3/8, 5/8):
        // pe = 34/64, kappa = (0.5 − 34/64) / (1 − 34/64) = −1/15.
        let two = vec![vec![0, 0], vec![0, 1], vec![1, 1], vec![1, 0]];
        let two: Vec<Vec<usize>> = two
            .into_iter()
            .chain([vec![1, 1], vec![1, 1], vec![0, 1], vec![1, 0]])
            .collect();
        let pi = fleiss_kappa(&two);
        assert!((pi - (-1.0 / 15.0)).abs() < 1e-12, "{pi}");
        assert!(fleiss_kappa(&[vec![2, 2], vec![2, 2]]).is_nan());
        assert!(fleiss_kappa(&[vec![1]]).is_nan());
    }
}
