/**
 * topK 0 (every token a candidate) samples without sorting the vocabulary each token (issue 20, point 6), and
 * draws what the full sort drew: the reference below is the sampler as it was (the whole vocabulary sorted,
 * best first, then top-p, temperature and the draw), run with the same seeds on the same logits.
 */
import { ResolvedSampling, Rng, Sampler } from '../../lib/engine/sampling';

/** The sampler before the change: sorts every id by logit (ties: lower id first) for topK 0. */
function referenceSample(logits: Float32Array, o: ResolvedSampling, rng: Rng): number {
  const n = logits.length;
  const ids = Array.from({ length: n }, (_, i) => i).sort((a, b) => logits[b] - logits[a] || a - b);
  const max = logits[ids[0]];
  const p = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += (p[i] = Math.exp(logits[ids[i]] - max));
  let keep = n;
  if (o.topP < 1) {
    let cum = 0;
    for (let i = 0; i < n; i++) {
      cum += p[i] / sum;
      if (cum >= o.topP) {
        keep = i + 1;
        break;
      }
    }
  }
  let total = 0;
  for (let i = 0; i < keep; i++) total += (p[i] = Math.exp((logits[ids[i]] - max) / o.temperature));
  let r = rng.next() * total;
  for (let i = 0; i < keep; i++) {
    r -= p[i];
    if (r < 0) return ids[i];
  }
  return ids[keep - 1];
}

/**
 * Logits with a long tail (some ties) and `peaks` large values `height` above it: peaked like a model's next
 * token, or flat enough that top-p and the draw walk most of the vocabulary.
 */
function logitsOf(n: number, seed: number, height = 12, peaks = 8): Float32Array {
  const rng = new Rng(seed);
  const l = new Float32Array(n);
  for (let i = 0; i < n; i++) l[i] = Math.round((rng.next() * 6 - 3) * 64) / 64;
  for (let j = 0; j < peaks; j++) l[Math.floor(rng.next() * n)] = height + rng.next() * 4;
  return l;
}

describe('topK 0 without a full sort', () => {
  test.each([
    [0.8, 0.95],
    [1.0, 1.0],
    [1.5, 1.0],
    [0.7, 0.5],
    [3.0, 0.999],
  ])('temperature %p, topP %p: the same token as the full sort, for every seed', (temperature, topP) => {
    for (let seed = 0; seed < 16; seed++) {
      const logits = logitsOf(32000, seed, seed % 4 === 0 ? 3 : 12, seed % 3 === 0 ? 200 : 8);
      const o = { temperature, topK: 0, topP, seed };
      const sampler = new Sampler(o);
      const ref = new Rng(seed);
      for (let step = 0; step < 3; step++) expect(sampler.sample(logits)).toBe(referenceSample(logits, o, ref));
    }
  });

  test('flat logits (the walk needs most of the vocabulary): still the same tokens', () => {
    for (let seed = 0; seed < 10; seed++) {
      const logits = new Float32Array(20000).fill(0.5);
      logits[seed] = 0.6;
      const o = { temperature: 1, topK: 0, topP: seed % 2 ? 1 : 0.9, seed };
      const sampler = new Sampler(o);
      const ref = new Rng(seed);
      for (let step = 0; step < 5; step++) expect(sampler.sample(logits)).toBe(referenceSample(logits, o, ref));
    }
  });

  test('a peaked distribution (as a model gives) is sampled without sorting the vocabulary', () => {
    const logits = logitsOf(32000, 1);
    const sampler = new Sampler({ temperature: 0.8, topK: 0, topP: 0.95, seed: 3 });
    const sort = jest.spyOn(Array.prototype, 'sort');
    try {
      for (let i = 0; i < 5; i++) sampler.sample(logits);
      expect(sort).not.toHaveBeenCalled();
    } finally {
      sort.mockRestore();
    }
    // The flat case above does sort, once the prefix is not enough: the spy sees a sort when there is one.
    const flat = new Sampler({ temperature: 1, topK: 0, topP: 1, seed: 1 });
    const spy = jest.spyOn(Array.prototype, 'sort');
    try {
      flat.sample(new Float32Array(20000).fill(0.5));
      expect(spy).toHaveBeenCalled();
    } finally {
      spy.mockRestore();
    }
  });
});
