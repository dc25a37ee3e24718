//! Rank and linear correlation, and Cohen's kappa.

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

/// Cohen's kappa between two raters' categorical labels.
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
}
