/* A fit's busiest steps on a CPU, forward and backward: activation(group_norm(z)) with one group per
   channel, optionally of z upsampled 2x first (bilinearly or bicubically), and a post-filter on
   unshuffled planes.

   dipcodec/fused.py compiles this file on first use and calls it through ctypes. PyTorch runs the
   normalization and activation as four to six passes over each stage's maps (upsample, normalize,
   activate, and in the backward pass the activation's derivative, a product, the normalization's
   gradient and the upsampling's); these are two passes each way, which is what an iteration on a
   2-core machine is bound by: memory traffic.

   Rows are the (sample, channel) maps of an N x C x H x W tensor, each of `n` floats; row r uses
   gain[r % channels] and bias[r % channels]. Each row is done by one thread, start to end, so the
   result does not depend on the number of threads (OpenMP's, which are PyTorch's: the library loads
   into a process that has PyTorch's libgomp already). Activation 0 is max(x, 0), 1 is sin(x). */

#include <math.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define BLOCK 4096 /* floats summed in single precision before a double carries them on */

/* Adds the sums of z - shift and of its squares over n samples to *sum and *squares. */
static void add_shifted_sums(const float *z, int64_t n, float shift, double *sum, double *squares) {
    for (int64_t start = 0; start < n; start += BLOCK) {
        const int64_t stop = start + BLOCK < n ? start + BLOCK : n;
        float block_sum = 0.f, block_squares = 0.f;
#pragma omp simd reduction(+ : block_sum, block_squares)
        for (int64_t i = start; i < stop; ++i) {
            const float d = z[i] - shift;
            block_sum += d;
            block_squares += d * d;
        }
        *sum += block_sum;
        *squares += block_squares;
    }
}

/* A map's mean and 1/sqrt(variance + eps) from its n samples' sums about `shift`, its first sample:
   a map whose mean is far from zero keeps its variance's digits. */
static void moments(double sum, double squares, double n, float shift, float eps, float *mean, float *rstd) {
    const double centred = sum / n;
    double variance = squares / n - centred * centred;
    if (variance < 0.0) variance = 0.0;
    *mean = (float)(shift + centred);
    *rstd = (float)(1.0 / sqrt(variance + eps));
}

/* out = activation(scale * z + shift) over n samples. */
static void activate(const float *z, float *out, int64_t n, float scale, float shift, int activation) {
    if (activation == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) out[i] = sinf(scale * z[i] + shift);
    } else {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) out[i] = fmaxf(scale * z[i] + shift, 0.f);
    }
}

/* With y = gain * x_hat + bias and x_hat = (z - mean) * rstd, and g_y the gradient at y (the
   activation's derivative times the incoming gradient): the gain's gradient is sum(g_y x_hat), the
   bias's sum(g_y), and z's gain * rstd * (g_y - mean(g_y) - x_hat mean(g_y x_hat)).
   activation_gradient writes g_y over n samples and adds its two sums to *sum and *sum_x (`scale`
   and `shift` make y of z); normalization_gradient then writes z's gradient from g_y and the sums'
   means (`out` may be g_y or z: each sample is read before it is written). */
static void activation_gradient(const float *z, const float *grad, float *g_y, int64_t n, float scale, float shift,
                                float mean, float rstd, int activation, double *sum, double *sum_x) {
    for (int64_t start = 0; start < n; start += BLOCK) {
        const int64_t stop = start + BLOCK < n ? start + BLOCK : n;
        float block_sum = 0.f, block_x = 0.f;
        if (activation == 1) {
#pragma omp simd reduction(+ : block_sum, block_x)
            for (int64_t i = start; i < stop; ++i) {
                const float g = grad[i] * cosf(scale * z[i] + shift);
                g_y[i] = g;
                block_sum += g;
                block_x += g * (z[i] - mean) * rstd;
            }
        } else {
#pragma omp simd reduction(+ : block_sum, block_x)
            for (int64_t i = start; i < stop; ++i) {
                const float g = scale * z[i] + shift > 0.f ? grad[i] : 0.f;
                g_y[i] = g;
                block_sum += g;
                block_x += g * (z[i] - mean) * rstd;
            }
        }
        *sum += block_sum;
        *sum_x += block_x;
    }
}

static void normalization_gradient(const float *g_y, const float *z, float *out, int64_t n, float scale, float mean,
                                   float rstd, float mean_g, float mean_gx) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i] = scale * (g_y[i] - mean_g - (z[i] - mean) * rstd * mean_gx);
}

void norm_activation_forward(const float *z, const float *gain, const float *bias, float *out, float *mean,
                             float *rstd, int64_t rows, int64_t channels, int64_t n, float eps, int activation,
                             int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t row = 0; row < rows; ++row) {
        const float *zr = z + row * n;
        double sum = 0.0, squares = 0.0;
        add_shifted_sums(zr, n, zr[0], &sum, &squares);
        moments(sum, squares, (double)n, zr[0], eps, &mean[row], &rstd[row]);
        const int64_t c = row % channels;
        const float scale = gain[c] * rstd[row];
        activate(zr, out + row * n, n, scale, bias[c] - mean[row] * scale, activation);
    }
}

/* The first pass leaves g_y in grad_z and sums; the second turns it into z's gradient in place. */
void norm_activation_backward(const float *grad, const float *z, const float *gain, const float *bias,
                              const float *mean, const float *rstd, float *grad_z, float *grad_gain,
                              float *grad_bias, int64_t rows, int64_t channels, int64_t n, int activation,
                              int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t row = 0; row < rows; ++row) {
        const float *zr = z + row * n;
        float *g_z = grad_z + row * n;
        const int64_t c = row % channels;
        const float m = mean[row], s = rstd[row], scale = gain[c] * s;
        double sum = 0.0, sum_x = 0.0;
        activation_gradient(zr, grad + row * n, g_z, n, scale, bias[c] - m * scale, m, s, activation, &sum, &sum_x);
        grad_bias[row] = (float)sum;
        grad_gain[row] = (float)sum_x;
        normalization_gradient(g_z, zr, g_z, n, scale, m, s, (float)(sum / (double)n), (float)(sum_x / (double)n));
    }
}

/* The same step with a 2x upsampling before it (align_corners=False, PyTorch's geometry): z is never
   stored. Each map of the input is h x w. Bilinearly, output row 2i + a is row i of the input mixed
   3:1 with its neighbour above (a = 0) or below (a = 1), the end rows standing in past either end,
   and the same along each row. Bicubically (Keys' kernel, a = -0.75), output row 2i mixes input rows
   i - 2 ... i + 1 by CUBIC and row 2i + 1 rows i + 2 ... i - 1, the end rows again standing in past
   either end. Rows of z are rebuilt, one at a time, wherever a pass needs them. */

static const float CUBIC[4] = {-9.f / 256.f, 67.f / 256.f, 225.f / 256.f, -27.f / 256.f};

static int64_t clamped(int64_t i, int64_t n) { return i < 0 ? 0 : i < n ? i : n - 1; }

/* The input row that output row `o` takes its quarter from: the one above o / 2 for even o, below
   for odd, the end rows standing in past either end of the h rows. */
static int64_t far_row(int64_t o, int64_t h) { return clamped(o % 2 == 0 ? o / 2 - 1 : o / 2 + 1, h); }

/* Floats of scratch a thread needs for maps w samples wide (a row of z, and two rows of w + 4). */
int64_t row_buffer_floats(int64_t w) { return 4 * w + 8; }

/* This thread's part of `rows` (the caller's scratch, `floats` a thread): no allocation in here. */
static float *thread_rows(float *rows, int64_t floats) {
#ifdef _OPENMP
    return rows + (int64_t)omp_get_thread_num() * floats;
#else
    return rows;
#endif
}

/* Row `o` (of 2h) of z, 2w floats, from the map `x` (h x w), bilinearly. */
static void bilinear_row(const float *x, int64_t h, int64_t w, int64_t o, float *row, float *mixed) {
    const float *near = x + o / 2 * w, *far = x + far_row(o, h) * w;
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) mixed[j] = 0.75f * near[j] + 0.25f * far[j];
    row[0] = 0.75f * mixed[0] + 0.25f * mixed[0];
    row[2 * w - 1] = 0.75f * mixed[w - 1] + 0.25f * mixed[w - 1];
    if (w > 1) {
        row[1] = 0.75f * mixed[0] + 0.25f * mixed[1];
        row[2 * w - 2] = 0.75f * mixed[w - 1] + 0.25f * mixed[w - 2];
    }
#pragma omp simd
    for (int64_t j = 1; j < w - 1; ++j) { /* the interior, without the ends' clamps, so that it vectorizes */
        row[2 * j] = 0.75f * mixed[j] + 0.25f * mixed[j - 1];
        row[2 * j + 1] = 0.75f * mixed[j] + 0.25f * mixed[j + 1];
    }
}

/* The input row whose weight in output row `o` is CUBIC[k]. */
static int64_t cubic_row_index(int64_t o, int k, int64_t h) {
    return clamped(o % 2 == 0 ? o / 2 - 2 + k : o / 2 + 2 - k, h);
}

/* The same bicubically; `padded` (w + 4 floats) holds the columns mixed, their end samples repeated
   twice past either end, so that every output sample reads four without a clamp. */
static void bicubic_row(const float *x, int64_t h, int64_t w, int64_t o, float *row, float *padded) {
    const float *r0 = x + cubic_row_index(o, 0, h) * w, *r1 = x + cubic_row_index(o, 1, h) * w;
    const float *r2 = x + cubic_row_index(o, 2, h) * w, *r3 = x + cubic_row_index(o, 3, h) * w;
    float *mixed = padded + 2;
#pragma omp simd
    for (int64_t j = 0; j < w; ++j)
        mixed[j] = CUBIC[0] * r0[j] + CUBIC[1] * r1[j] + CUBIC[2] * r2[j] + CUBIC[3] * r3[j];
    padded[0] = padded[1] = mixed[0];
    mixed[w] = mixed[w + 1] = mixed[w - 1];
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) {
        const float *m = mixed + j;
        row[2 * j] = CUBIC[0] * m[-2] + CUBIC[1] * m[-1] + CUBIC[2] * m[0] + CUBIC[3] * m[1];
        row[2 * j + 1] = CUBIC[0] * m[2] + CUBIC[1] * m[1] + CUBIC[2] * m[0] + CUBIC[3] * m[-1];
    }
}

static void upsampled_row(const float *x, int64_t h, int64_t w, int64_t o, float *row, float *mixed, int cubic) {
    if (cubic)
        bicubic_row(x, h, w, o, row, mixed);
    else
        bilinear_row(x, h, w, o, row, mixed);
}

/* Adds the transpose of the upsampling to row `y` of z's gradient (`row`, 2w floats) into the input's
   gradient g_x (h x w); `gathered` is w + 4 floats of scratch. Bilinearly, input j takes 3/4 of
   outputs 2j and 2j + 1 and 1/4 of 2j - 1 and 2j + 2 (the end samples take the quarter that falls
   past them), and the same along columns; bicubically each output gives CUBIC's weights back to the
   four inputs it read, the ends' repeats to the end samples. */
static void add_transposed_row(const float *row, float *g_x, int64_t h, int64_t w, int64_t y, float *gathered,
                               int cubic) {
    if (!cubic) {
        gathered[0] = 0.75f * (row[0] + row[1]) + 0.25f * row[0] + 0.25f * (w > 1 ? row[2] : row[1]);
        if (w > 1)
            gathered[w - 1] = 0.75f * (row[2 * w - 2] + row[2 * w - 1]) + 0.25f * row[2 * w - 3] +
                              0.25f * row[2 * w - 1];
#pragma omp simd
        for (int64_t j = 1; j < w - 1; ++j)
            gathered[j] = 0.75f * (row[2 * j] + row[2 * j + 1]) + 0.25f * row[2 * j - 1] + 0.25f * row[2 * j + 2];
        float *near = g_x + y / 2 * w, *far = g_x + far_row(y, h) * w;
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) near[j] += 0.75f * gathered[j];
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) far[j] += 0.25f * gathered[j];
        return;
    }
    /* gathered[p] collects padded column p (column p - 2): output 2j read columns j - 2 + k and output
       2j + 1 columns j + 2 - k, by CUBIC[k]. */
    for (int64_t p = 0; p < w + 4; ++p) gathered[p] = 0.f;
    for (int k = 0; k < 4; ++k) {
        const float weight = CUBIC[k];
        float *even = gathered + k, *odd = gathered + 4 - k;
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) even[j] += weight * row[2 * j];
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) odd[j] += weight * row[2 * j + 1];
    }
    gathered[2] += gathered[0] + gathered[1];
    gathered[w + 1] += gathered[w + 2] + gathered[w + 3];
    const float *columns = gathered + 2;
    for (int k = 0; k < 4; ++k) {
        float *target = g_x + cubic_row_index(y, k, h) * w;
        const float weight = CUBIC[k];
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) target[j] += weight * columns[j];
    }
}

void upsample_norm_activation_forward(const float *x, const float *gain, const float *bias, float *out, float *mean,
                                      float *rstd, float *buffers, int64_t rows, int64_t channels, int64_t h,
                                      int64_t w, float eps, int activation, int cubic, int threads) {
#pragma omp parallel num_threads(threads)
    {
        float *row = thread_rows(buffers, row_buffer_floats(w));
        float *mixed = row + 2 * w;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            const float *xr = x + r * h * w;
            double sum = 0.0, squares = 0.0;
            for (int64_t y = 0; y < 2 * h; ++y) {
                upsampled_row(xr, h, w, y, row, mixed, cubic);
                add_shifted_sums(row, 2 * w, xr[0], &sum, &squares);
            }
            moments(sum, squares, 4.0 * (double)h * (double)w, xr[0], eps, &mean[r], &rstd[r]);
            const int64_t c = r % channels;
            const float scale = gain[c] * rstd[r], shift = bias[c] - mean[r] * scale;
            for (int64_t y = 0; y < 2 * h; ++y) {
                upsampled_row(xr, h, w, y, row, mixed, cubic);
                activate(row, out + (r * 2 * h + y) * 2 * w, 2 * w, scale, shift, activation);
            }
        }
    }
}

/* The first pass leaves g_y in `scratch` (4 h w floats a map) and sums; the second forms z's gradient
   a row at a time and gathers it straight into the input's gradient (add_transposed_row). */
void upsample_norm_activation_backward(const float *grad, const float *x, const float *gain, const float *bias,
                                       const float *mean, const float *rstd, float *scratch, float *buffers,
                                       float *grad_x, float *grad_gain, float *grad_bias, int64_t rows,
                                       int64_t channels, int64_t h, int64_t w, int activation, int cubic,
                                       int threads) {
#pragma omp parallel num_threads(threads)
    {
        float *row = thread_rows(buffers, row_buffer_floats(w));
        float *mixed = row + 2 * w, *gathered = mixed + w + 4;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            const float *xr = x + r * h * w;
            float *g_y = scratch + r * 4 * h * w, *g_x = grad_x + r * h * w;
            const int64_t c = r % channels;
            const float m = mean[r], s = rstd[r];
            const float scale = gain[c] * s, shift = bias[c] - m * scale;
            double sum = 0.0, sum_x = 0.0;
            for (int64_t y = 0; y < 2 * h; ++y) {
                upsampled_row(xr, h, w, y, row, mixed, cubic);
                activation_gradient(row, grad + (r * 2 * h + y) * 2 * w, g_y + y * 2 * w, 2 * w, scale, shift, m, s,
                                    activation, &sum, &sum_x);
            }
            grad_bias[r] = (float)sum;
            grad_gain[r] = (float)sum_x;
            const double n = 4.0 * (double)h * (double)w;
            const float mean_g = (float)(sum / n), mean_gx = (float)(sum_x / n);
            for (int64_t j = 0; j < h * w; ++j) g_x[j] = 0.f;
            for (int64_t y = 0; y < 2 * h; ++y) {
                upsampled_row(xr, h, w, y, row, mixed, cubic);
                normalization_gradient(g_y + y * 2 * w, row, row, 2 * w, scale, m, s, mean_g, mean_gx);
                add_transposed_row(row, g_x, h, w, y, gathered, cubic);
            }
        }
    }
}

/* The upsampling alone, for stages that upsample before their convolution: each of `rows` maps of
   h x w becomes 2h x 2w, and back for the gradient (rows of the output's gradient, one at a time,
   through add_transposed_row). */
void upsample_forward(const float *x, float *out, float *buffers, int64_t rows, int64_t h, int64_t w, int cubic,
                      int threads) {
#pragma omp parallel num_threads(threads)
    {
        float *mixed = thread_rows(buffers, row_buffer_floats(w));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t y = 0; y < 2 * h; ++y)
                upsampled_row(x + r * h * w, h, w, y, out + (r * 2 * h + y) * 2 * w, mixed, cubic);
    }
}

void upsample_backward(const float *grad, float *grad_x, float *buffers, int64_t rows, int64_t h, int64_t w,
                       int cubic, int threads) {
#pragma omp parallel num_threads(threads)
    {
        float *gathered = thread_rows(buffers, row_buffer_floats(w));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            float *g_x = grad_x + r * h * w;
            for (int64_t j = 0; j < h * w; ++j) g_x[j] = 0.f;
            for (int64_t y = 0; y < 2 * h; ++y)
                add_transposed_row(grad + (r * 2 * h + y) * 2 * w, g_x, h, w, y, gathered, cubic);
        }
    }
}

/* A convolution whose kernel is block-diagonal: output plane o reads only the `block` input planes
   of its own block (a post-filter on the pixel-unshuffled planes, fit.FilteredMSE: each colour's 4
   phases read that colour's 4 phases). PyTorch's dense convolution spends three times the work on
   the zeros, and its grouped one is slower still on a CPU. out[o][y][x] = offset[o] (0 without
   offsets) + the sum over the planes s of o's block and the taps of kernel[o][s][dy][dx] *
   in[s][y + dy][x + dx]; `in` holds planes x (h + k - 1) x (w + k - 1) samples, `kernel` planes x
   planes x k x k (only its diagonal blocks are read). The gradient of `in` is the same operation on
   the output's gradient, zero-padded by k - 1 on every side, with each block of the kernel
   transposed and its taps flipped (dipcodec/fused.py). */

#define TILE 32 /* outputs of a row summed in registers across all taps before they are stored */

void block_filter(const float *in, const float *kernel, const float *offset, float *out, int64_t planes,
                  int64_t block, int64_t h, int64_t w, int64_t k, int threads) {
    const int64_t ph = h + k - 1, pw = w + k - 1, tiles = w / TILE;
#pragma omp parallel for num_threads(threads) schedule(static) collapse(2)
    for (int64_t o = 0; o < planes; ++o)
        for (int64_t y = 0; y < h; ++y) {
            const int64_t first = o / block * block;
            const float start = offset ? offset[o] : 0.f;
            float *row = out + (o * h + y) * w;
            for (int64_t tile = 0; tile < tiles; ++tile) {
                float sum[TILE];
                for (int j = 0; j < TILE; ++j) sum[j] = start;
                for (int64_t s = first; s < first + block; ++s)
                    for (int64_t dy = 0; dy < k; ++dy) {
                        const float *source = in + (s * ph + y + dy) * pw + tile * TILE;
                        const float *taps = kernel + ((o * planes + s) * k + dy) * k;
                        for (int64_t dx = 0; dx < k; ++dx) {
                            const float tap = taps[dx];
#pragma omp simd
                            for (int j = 0; j < TILE; ++j) sum[j] += tap * source[j + dx];
                        }
                    }
                for (int j = 0; j < TILE; ++j) row[tile * TILE + j] = sum[j];
            }
            for (int64_t x = tiles * TILE; x < w; ++x) { /* the row's last, partial tile */
                float sum = start;
                for (int64_t s = first; s < first + block; ++s)
                    for (int64_t dy = 0; dy < k; ++dy)
                        for (int64_t dx = 0; dx < k; ++dx)
                            sum += kernel[((o * planes + s) * k + dy) * k + dx] * in[(s * ph + y + dy) * pw + x + dx];
                row[x] = sum;
            }
        }
}
