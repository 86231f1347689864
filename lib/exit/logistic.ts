/**
 * L2-regularised logistic regression by Newton's method (IRLS), for the hidden-state probe (probe.ts).
 *
 * Minimises J(w, b) = (1/n)·Σ_i [log(1 + e^(s_i)) − y_i·s_i] + (l2/2)·‖w‖², s_i = w·x_i + b (the bias is not
 * penalised). J is strictly convex in w for l2 > 0, so the minimum is unique; Newton's step solves
 * (Xᵀ·diag(p(1−p))·X/n + l2·I)·Δ = −∇J by Cholesky, with step halving until J decreases. On d + 1 = 129..140
 * unknowns the Hessian costs n·d² per iteration and converges in ~10 iterations, which is why Newton and not a
 * first-order method. npm has no maintained pure-JS logistic regression with L2 and a second-order solver
 * (ml-logistic-regression is plain gradient descent with a fixed step and iteration count).
 */

export interface LogisticModel {
  weights: Float64Array;
  bias: number;
  iterations: number;
  /** The objective at the returned weights. */
  objective: number;
}

const sigmoid = (s: number) => (s >= 0 ? 1 / (1 + Math.exp(-s)) : Math.exp(s) / (1 + Math.exp(s)));
/** log(1 + e^s) without overflow. */
const softplus = (s: number) => (s > 0 ? s + Math.log1p(Math.exp(-s)) : Math.log1p(Math.exp(s)));

/** J at (w, b) for rows x ([n][d], row-major). */
export function logisticObjective(x: Float64Array, y: Uint8Array, n: number, d: number, w: Float64Array, b: number, l2: number): number {
  let loss = 0;
  for (let i = 0; i < n; i++) {
    let s = b;
    const o = i * d;
    for (let j = 0; j < d; j++) s += w[j] * x[o + j];
    loss += softplus(s) - (y[i] ? s : 0);
  }
  let norm = 0;
  for (let j = 0; j < d; j++) norm += w[j] * w[j];
  return loss / n + 0.5 * l2 * norm;
}

/** Solves A·v = r in place of r for a symmetric positive definite A ([m][m], row-major; A is overwritten). */
export function choleskySolve(a: Float64Array, r: Float64Array, m: number): void {
  for (let j = 0; j < m; j++) {
    let diag = a[j * m + j];
    for (let k = 0; k < j; k++) diag -= a[j * m + k] * a[j * m + k];
    if (!(diag > 0)) throw new Error(`choleskySolve: matrix not positive definite at ${j}`);
    const l = Math.sqrt(diag);
    a[j * m + j] = l;
    for (let i = j + 1; i < m; i++) {
      let v = a[i * m + j];
      for (let k = 0; k < j; k++) v -= a[i * m + k] * a[j * m + k];
      a[i * m + j] = v / l;
    }
  }
  for (let i = 0; i < m; i++) {
    let v = r[i];
    for (let k = 0; k < i; k++) v -= a[i * m + k] * r[k];
    r[i] = v / a[i * m + i];
  }
  for (let i = m - 1; i >= 0; i--) {
    let v = r[i];
    for (let k = i + 1; k < m; k++) v -= a[k * m + i] * r[k];
    r[i] = v / a[i * m + i];
  }
}

/** Fits J's minimiser for rows x ([n][d]) and labels y (0/1); stops after the full Newton step taken once half the Newton decrement is below 1e-14. */
export function fitLogistic(x: Float64Array, y: Uint8Array, n: number, d: number, l2: number, maxIterations = 50): LogisticModel {
  if (!(l2 > 0)) throw new Error('fitLogistic: l2 must be > 0');
  const m = d + 1; // weights, then the bias
  let w = new Float64Array(d);
  let b = 0;
  let value = logisticObjective(x, y, n, d, w, b, l2);
  const grad = new Float64Array(m);
  const hess = new Float64Array(m * m);
  const row = new Float64Array(m);
  let iterations = 0;
  for (; iterations < maxIterations; iterations++) {
    grad.fill(0);
    hess.fill(0);
    for (let i = 0; i < n; i++) {
      const o = i * d;
      let s = b;
      for (let j = 0; j < d; j++) s += w[j] * (row[j] = x[o + j]);
      row[d] = 1;
      const p = sigmoid(s);
      const e = p - (y[i] ? 1 : 0);
      const h = p * (1 - p);
      for (let j = 0; j < m; j++) {
        grad[j] += e * row[j];
        const hj = h * row[j];
        if (hj === 0) continue;
        // Lower triangle only; mirrored below.
        for (let k = 0; k <= j; k++) hess[j * m + k] += hj * row[k];
      }
    }
    for (let j = 0; j < m; j++) {
      grad[j] /= n;
      for (let k = 0; k <= j; k++) hess[j * m + k] /= n;
    }
    for (let j = 0; j < d; j++) {
      grad[j] += l2 * w[j];
      hess[j * m + j] += l2;
    }
    // The bias is unpenalised: a tiny ridge keeps the system definite when every p(1−p) underflows.
    hess[d * m + d] += 1e-12;
    for (let j = 0; j < m; j++) for (let k = j + 1; k < m; k++) hess[j * m + k] = hess[k * m + j];
    const step = Float64Array.from(grad);
    choleskySolve(hess, step, m);
    let decrement = 0;
    for (let j = 0; j < m; j++) decrement += grad[j] * step[j];
    if (decrement / 2 < 1e-14) {
      // Quadratic convergence: this last full step takes the gradient to rounding level (the objective would no
      // longer show a decrease for the line search to test).
      for (let j = 0; j < d; j++) w[j] -= step[j];
      b -= step[d];
      value = logisticObjective(x, y, n, d, w, b, l2);
      break;
    }
    let t = 1;
    let accepted = false;
    for (let tries = 0; tries < 40; tries++, t *= 0.5) {
      const wNew = new Float64Array(d);
      for (let j = 0; j < d; j++) wNew[j] = w[j] - t * step[j];
      const bNew = b - t * step[d];
      const v = logisticObjective(x, y, n, d, wNew, bNew, l2);
      if (v <= value - 1e-4 * t * decrement) {
        w = wNew;
        b = bNew;
        value = v;
        accepted = true;
        break;
      }
    }
    if (!accepted) break;
  }
  return { weights: w, bias: b, iterations, objective: value };
}
