//! Tests of our patches to candle's quantized CPU kernels
//! (patches/candle-core-0.10.2): each fast path against candle's own scalar
//! code on random blocks. Nothing here is compiled outside `cargo test`.

use candle_core::quantized::k_quants::{
    matmul, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1,
    BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType,
};
use half::f16;

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
/// through the run-time dispatch of
/// patches/candle-core-0.10.2/0001-avx2-kernels-chosen-at-run-time.
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

/// The quantized `matmul` gives an output the same value whether its row
/// comes alone (decode) or with others (a batch, a prompt: eight or four
/// rows at a time and a short last group), close to the scalar dot product, with
/// column counts that do not fill the last tile or group of four (the shapes
/// whose k the type's block divides).
fn check_matmul<T: GgmlType>() {
    for (k, m, n) in [
        (64, 1, 40),
        (64, 3, 17),
        (64, 8, 64),
        (64, 37, 102),
        (576, 4, 16),
        (576, 13, 33),
        (512, 9, 36),
        (256, 8, 20),
        (768, 13, 9),
    ]
    .into_iter()
    .filter(|(k, _, _)| k % T::BLCK_SIZE == 0)
    {
        let blocks = k / T::BLCK_SIZE;
        let lhs = random_floats(m * k, m as u64);
        let rhs: Vec<T> = quantize(&random_floats(n * k, 1000 + n as u64));
        let mut dst = vec![0f32; m * n];
        matmul((m, k, n), &lhs, &rhs, &mut dst).unwrap();
        for row in 0..m {
            let mut alone = vec![0f32; n];
            matmul((1, k, n), &lhs[row * k..(row + 1) * k], &rhs, &mut alone).unwrap();
            let lhs_row: Vec<T::VecDotType> = quantize(&lhs[row * k..(row + 1) * k]);
            for col in 0..n {
                let value = dst[row * n + col];
                assert_eq!(
                    value.to_bits(),
                    alone[col].to_bits(),
                    "k={k} m={m} n={n} at ({row}, {col}): {value} in the batch, {} alone",
                    alone[col]
                );
                let scalar = T::vec_dot_unopt(k, &rhs[col * blocks..(col + 1) * blocks], &lhs_row);
                assert!(
                    (value - scalar).abs() <= 1e-4 * (1.0 + scalar.abs()),
                    "k={k} m={m} n={n} at ({row}, {col}): {value} against {scalar}"
                );
            }
        }
    }
}

/// Q4_1's four-column kernel, eight rows at a time
/// (patches/candle-core-0.10.2/0004-four-columns-and-up-to-eight-rows-per-kernel-call).
#[test]
fn q4_1_matmul_gives_a_row_the_same_alone_and_in_a_batch() {
    check_matmul::<BlockQ4_1>();
}

/// Q8_0's kernels: with AVX-512 and VNNI a four-column tile for one row and
/// many, otherwise four columns side by side for up to eight rows with
/// `vec_dot`'s arithmetic, which one row takes column by column
/// (patches/candle-core-0.10.2/0004-four-columns-and-up-to-eight-rows-per-kernel-call).
#[test]
fn q8_0_matmul_gives_a_row_the_same_alone_and_in_a_batch() {
    check_matmul::<BlockQ8_0>();
}

/// Q4_0's, Q5_0's and Q5_1's four-column kernels, laid out as Q4_1's, and
/// with AVX-512 and VNNI Q4_0's and Q5_0's eight-column ones (groups of eight
/// columns, then four, then single ones, whatever the row count)
/// (patches/candle-core-0.10.2/0004-four-columns-and-up-to-eight-rows-per-kernel-call).
#[test]
fn q4_0_matmul_gives_a_row_the_same_alone_and_in_a_batch() {
    check_matmul::<BlockQ4_0>();
}

#[test]
fn q5_0_matmul_gives_a_row_the_same_alone_and_in_a_batch() {
    check_matmul::<BlockQ5_0>();
}

#[test]
fn q5_1_matmul_gives_a_row_the_same_alone_and_in_a_batch() {
    check_matmul::<BlockQ5_1>();
}

/// Q4K's and Q6K's kernels (the bulk of a Q4_K_M file whose rows are a
/// multiple of 256): with AVX-512 four-column tiles, the same for one row
/// and many and within float rounding of `vec_dot` (their floats sum in
/// other lanes); with AVX2 alone, kernels that keep `vec_dot`'s arithmetic,
/// bit-equal to it
/// (patches/candle-core-0.10.2/0004-four-columns-and-up-to-eight-rows-per-kernel-call).
#[test]
fn q4k_matmul_gives_a_row_the_same_alone_and_in_a_batch() {
    check_matmul::<BlockQ4K>();
    check_k_quant_kernel::<BlockQ4K>();
}

#[test]
fn q6k_matmul_gives_a_row_the_same_alone_and_in_a_batch() {
    check_matmul::<BlockQ6K>();
    check_k_quant_kernel::<BlockQ6K>();
}

/// The kernel this CPU takes for Q4K and Q6K against `vec_dot`: the AVX-512
/// tile within 1e-6 of it (relative to the largest output), AVX2's bit-equal.
fn check_k_quant_kernel<T: GgmlType>() {
    if has_avx512_tiles() {
        check_matmul_close_to_vec_dot::<T>(1e-6);
    } else {
        check_matmul_equals_vec_dot::<T>();
    }
}

fn has_avx512_tiles() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw");
    #[allow(unreachable_code)]
    false
}

/// A batch's `matmul` outputs (9 rows, 13 columns, `k` deep) and, in the same
/// order, `vec_dot` of each output's row and column.
fn matmul_and_vec_dots<T: GgmlType>(k: usize) -> (Vec<f32>, Vec<f32>) {
    let (m, n) = (9, 13);
    let blocks = k / T::BLCK_SIZE;
    let lhs = random_floats(m * k, 7);
    let rhs: Vec<T> = quantize(&random_floats(n * k, 8));
    let mut dst = vec![0f32; m * n];
    matmul((m, k, n), &lhs, &rhs, &mut dst).unwrap();
    let mut expected = Vec::with_capacity(m * n);
    for row in 0..m {
        let lhs_row: Vec<T::VecDotType> = quantize(&lhs[row * k..(row + 1) * k]);
        for col in 0..n {
            expected.push(T::vec_dot(
                k,
                &rhs[col * blocks..(col + 1) * blocks],
                &lhs_row,
            ));
        }
    }
    (dst, expected)
}

/// Every output of a batch's `matmul` within `tolerance` (relative to the
/// largest) of `vec_dot` of its row and column.
fn check_matmul_close_to_vec_dot<T: GgmlType>(tolerance: f32) {
    let (outputs, expected) = matmul_and_vec_dots::<T>(1024);
    let largest = outputs
        .iter()
        .fold(0f32, |largest, value| largest.max(value.abs()));
    for (i, (value, expected)) in outputs.iter().zip(&expected).enumerate() {
        assert!(
            (value - expected).abs() <= tolerance * largest,
            "output {i}: {value} against {expected} (largest output {largest})"
        );
    }
}

/// Every output of a batch's `matmul` is bit-equal to `vec_dot` of its row
/// and column (a kernel that keeps `vec_dot`'s arithmetic).
fn check_matmul_equals_vec_dot<T: GgmlType>() {
    let (outputs, expected) = matmul_and_vec_dots::<T>(512);
    for (i, (value, expected)) in outputs.iter().zip(&expected).enumerate() {
        assert_eq!(value.to_bits(), expected.to_bits(), "output {i}");
    }
}

/// A type without such a kernel (Q2K, Q3K, Q5K) takes one `vec_dot` per
/// output.
#[test]
fn default_matmul_gives_a_row_the_same_alone_and_in_a_batch() {
    check_matmul::<BlockQ5K>();
}

/// Q8_0's and Q8_1's quantization of activations (AVX2, chosen at run time:
/// patches/candle-core-0.10.2/0001-avx2-kernels-chosen-at-run-time) writes the
/// scalar code's bytes: the scale amax / 127 as f16, each value times its
/// inverse rounded half away from zero, and Q8_1's sum times the scale; a
/// block of exact halves and one of zeros too.
#[test]
fn q8_quantization_of_activations_matches_the_scalar_code() {
    let mut values = random_floats(32 * 64, 7);
    // Largest magnitude 127, so the scale is 1: the others are exact halves.
    for (i, value) in values[..32].iter_mut().enumerate() {
        *value = if i == 0 {
            127.0
        } else {
            i as f32 * 7.0 - 110.5
        };
    }
    values[32..64].fill(0.0);
    let q8_0: Vec<BlockQ8_0> = quantize(&values);
    let q8_1: Vec<BlockQ8_1> = quantize(&values);
    for (block, xs) in values.chunks_exact(32).enumerate() {
        let d = xs.iter().fold(0f32, |max, x| max.max(x.abs())) / 127.0;
        let inverse = if d != 0.0 { 1.0 / d } else { 0.0 };
        let qs: Vec<i8> = xs.iter().map(|x| (x * inverse).round() as i8).collect();
        let scale = f16::from_f32(d);
        let sum = f16::from_f32(qs.iter().map(|&q| i32::from(q)).sum::<i32>() as f32) * scale;
        let quants: Vec<u8> = qs.iter().map(|&q| q as u8).collect();
        assert_eq!(
            bytes(&q8_0[block]),
            [&scale.to_le_bytes()[..], &quants].concat(),
            "Q8_0 block {block}"
        );
        let q8_1_bytes = [&scale.to_le_bytes()[..], &sum.to_le_bytes(), &quants].concat();
        assert_eq!(bytes(&q8_1[block]), q8_1_bytes, "Q8_1 block {block}");
    }
}

/// A block's bytes.
fn bytes<T>(block: &T) -> &[u8] {
    // SAFETY: the block types are repr(C) f16s and bytes, without padding.
    unsafe { std::slice::from_raw_parts(block as *const T as *const u8, std::mem::size_of::<T>()) }
}

/// Q8K's quantization of activations (AVX-512 where the CPU has it:
/// patches/candle-core-0.10.2/0004-four-columns-and-up-to-eight-rows-per-kernel-call)
/// writes candle's scalar code's bytes: the scale from the first value of
/// the largest magnitude (-128 over it), each value times it rounded half
/// away from zero and at most 127, the sums of each 16; a block whose
/// largest magnitude comes twice with both signs, one of exact halves, one
/// of zeros.
#[test]
fn q8k_quantization_of_activations_matches_the_scalar_code() {
    let mut values = random_floats(256 * 16, 11);
    values[3] = -9.0;
    values[200] = 9.0;
    // Largest magnitude 128 first: the scale is -1, the others are exact halves.
    for (i, value) in values[256..512].iter_mut().enumerate() {
        *value = if i == 0 {
            128.0
        } else {
            (i % 64) as f32 * 3.0 - 95.5
        };
    }
    values[512..768].fill(0.0);
    let q8k: Vec<BlockQ8K> = quantize(&values);
    for (block, xs) in values.chunks_exact(256).enumerate() {
        let first_largest = xs
            .iter()
            .fold(0f32, |max, &x| if max.abs() < x.abs() { x } else { max });
        let (d, qs): (f32, Vec<i8>) = if first_largest == 0.0 {
            (0.0, vec![0; 256])
        } else {
            let iscale = -128f32 / first_largest;
            (
                1.0 / iscale,
                xs.iter()
                    .map(|x| (iscale * x).round().min(127.0) as i8)
                    .collect(),
            )
        };
        let sums: Vec<i16> = qs
            .chunks_exact(16)
            .map(|g| g.iter().map(|&q| i16::from(q)).sum())
            .collect();
        let quants: Vec<u8> = qs.iter().map(|&q| q as u8).collect();
        let sum_bytes: Vec<u8> = sums.iter().flat_map(|s| s.to_le_bytes()).collect();
        assert_eq!(
            bytes(&q8k[block]),
            [&d.to_le_bytes()[..], &quants, &sum_bytes].concat(),
            "Q8K block {block}"
        );
    }
}
