//! Tests of our patches to candle's quantized CPU kernels
//! (patches/candle-core-0.10.2): each fast path against candle's own scalar
//! code on random blocks. Nothing here is compiled outside `cargo test`.

use candle_core::quantized::k_quants::{
    matmul, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1,
    BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType,
};

/// A fixed pseudo-random sequence in [-1, 1) (no dependency for a test).
fn random_floats(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn quantize<T: GgmlType>(values: &[f32]) -> Vec<T> {
    let mut blocks = vec![T::zeros(); values.len() / T::BLCK_SIZE];
    T::from_float(values, &mut blocks);
    blocks
}

/// The fast `vec_dot` agrees with the scalar one up to float rounding
/// (lengths that are multiples of 256, the super-block of the K types).
fn check_vec_dot<T: GgmlType>() {
    for (seed, k) in [(1, 256), (2, 512), (3, 1536)] {
        let weights: Vec<T> = quantize(&random_floats(k, seed));
        let input: Vec<T::VecDotType> = quantize(&random_floats(k, seed + 100));
        let fast = T::vec_dot(k, &weights, &input);
        let scalar = T::vec_dot_unopt(k, &weights, &input);
        assert!(
            (fast - scalar).abs() <= 1e-4 * (1.0 + scalar.abs()),
            "k={k}: {fast} against {scalar}"
        );
    }
}

#[test]
fn q4_1_vec_dot_matches_the_scalar_code() {
    check_vec_dot::<BlockQ4_1>();
}

#[test]
fn q5_0_vec_dot_matches_the_scalar_code() {
    check_vec_dot::<BlockQ5_0>();
}

#[test]
fn q5_1_vec_dot_matches_the_scalar_code() {
    check_vec_dot::<BlockQ5_1>();
}

/// The kernels candle already had (Q4_0, Q8_0 and the K types), now reached
/// through the run-time dispatch of patches/candle-core-0.10.2/0003.
#[test]
fn dispatched_vec_dots_match_the_scalar_code() {
    check_vec_dot::<BlockQ4_0>();
    check_vec_dot::<BlockQ8_0>();
    check_vec_dot::<BlockQ2K>();
    check_vec_dot::<BlockQ3K>();
    check_vec_dot::<BlockQ4K>();
    check_vec_dot::<BlockQ5K>();
    check_vec_dot::<BlockQ6K>();
    check_vec_dot::<BlockQ8K>();
}

/// The tiled `matmul` gives each output what one `vec_dot` of its row and
/// column gives, for one row (decode), a few (a batch) and many (a prompt,
/// rows four at a time through `vec_dot_rows4` and a short last group),
/// with column counts that do not fill the last tile.
#[test]
fn quantized_matmul_equals_one_vec_dot_per_output() {
    for (k, m, n) in [
        (64, 1, 40),
        (64, 3, 17),
        (64, 8, 64),
        (64, 37, 100),
        (576, 4, 16),
        (576, 13, 33),
    ] {
        let blocks = k / BlockQ4_1::BLCK_SIZE;
        let lhs = random_floats(m * k, m as u64);
        let rhs: Vec<BlockQ4_1> = quantize(&random_floats(n * k, 1000 + n as u64));
        let mut dst = vec![0f32; m * n];
        matmul((m, k, n), &lhs, &rhs, &mut dst).unwrap();
        for row in 0..m {
            let lhs_row: Vec<BlockQ8_1> = quantize(&lhs[row * k..(row + 1) * k]);
            for col in 0..n {
                let expected =
                    BlockQ4_1::vec_dot(k, &rhs[col * blocks..(col + 1) * blocks], &lhs_row);
                assert_eq!(
                    dst[row * n + col],
                    expected,
                    "k={k} m={m} n={n} at ({row}, {col})"
                );
            }
        }
    }
}
