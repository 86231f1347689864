#!/usr/bin/env python3
"""Compares the CUDA backend (and, as a control, the CPU backend) with llama.cpp's goldens in
../shared/reference, through adainfer_cuda_tests --logits / --greedy (no Node.js needed).

Tolerances are those of the JS golden tests (test/model/goldens.test.ts, quant_goldens.test.ts):
  F32 models: atol = 1e-4 * max(1, max|golden logit|)      F16: atol 3e-3, mean |delta| <= 5e-4
  Q8_0, Q4_0, Q4_K_M, Q6_K: atol 8e-2, mean <= 1e-2        BF16: atol 2.5e-2, mean <= 3e-3
Argmax must agree wherever the golden's top-1/top-2 gap is >= 2 * atol; greedy tokens must agree up to the
first step whose golden margin is below 2 * atol. Exit code 0 when every case passes.
"""
import argparse, json, os, struct, subprocess, sys, tempfile

TOL = {
    'stories260K': (lambda m: 1e-4 * max(1.0, m), float('inf')),
    'rand-gqa-f32': (lambda m: 1e-4 * max(1.0, m), float('inf')),
    'rand-mha-f32': (lambda m: 1e-4 * max(1.0, m), float('inf')),
    'rand-rope500k-f32': (lambda m: 1e-4 * max(1.0, m), float('inf')),
    'rand-gqa-f16': (lambda m: 3e-3, 5e-4),
    'rand-gqa-bf16': (lambda m: 2.5e-2, 3e-3),
    'rand-gqa-q8_0': (lambda m: 8e-2, 1e-2),
    'rand-gqa-q4_0': (lambda m: 8e-2, 1e-2),
    'rand-gqa-q4_k_m': (lambda m: 8e-2, 1e-2),
    'rand-gqa-q6_k': (lambda m: 8e-2, 1e-2),
    'rand-qwen2-f32': (lambda m: 1e-4 * max(1.0, m), float('inf')),
    'rand-qwen3-f32': (lambda m: 1e-4 * max(1.0, m), float('inf')),
    'rand-qwen2-q8_0': (lambda m: 8e-2, 1e-2),
    'rand-qwen3-q8_0': (lambda m: 8e-2, 1e-2),
}


def model_file(shared, name):
    return os.path.join(shared, 'models', 'stories260K.gguf') if name == 'stories260K' else \
        os.path.join(shared, 'reference', 'models', name + '.gguf')


def read_rows(path, n_vocab):
    data = open(path, 'rb').read()
    n = len(data) // (4 * n_vocab)
    return [struct.unpack_from('<%df' % n_vocab, data, 4 * n_vocab * i) for i in range(n)]


def argmax(row):
    best = 0
    for i, v in enumerate(row):
        if v > row[best]:
            best = i
    return best


def gap(row):
    s = sorted(row, reverse=True)
    return s[0] - s[1]


def compare(ours, golden, tol):
    atol_fn, mean_tol = tol
    max_abs = max(abs(v) for v in golden)
    atol = atol_fn(max_abs)
    deltas = [abs(a - b) for a, b in zip(ours, golden)]
    mx, mean = max(deltas), sum(deltas) / len(deltas)
    problem = None
    if not mx <= atol:
        problem = 'max |delta| %.2e > atol %.2e' % (mx, atol)
    elif not mean <= mean_tol:
        problem = 'mean |delta| %.2e > %g' % (mean, mean_tol)
    elif gap(golden) >= 2 * atol and argmax(ours) != argmax(golden):
        problem = 'argmax %d != %d' % (argmax(ours), argmax(golden))
    return problem, mx


def run(exe, args, backend):
    r = subprocess.run([exe] + args + ['--backend', backend], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError('%s failed (%d): %s %s' % (' '.join(args[:2]), r.returncode, r.stdout, r.stderr))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--exe', required=True)
    ap.add_argument('--shared', required=True)
    ap.add_argument('--backends', default='cuda,cpu')
    a = ap.parse_args()
    golden_root = os.path.join(a.shared, 'reference', 'golden')
    if not os.path.isdir(golden_root):
        print('SKIP goldens: %s not found' % golden_root)
        return 0
    failures = 0
    tmp = tempfile.mkdtemp()
    print('| backend | model | cases | max |delta| | greedy tokens agreeing | result |')
    print('|---|---|---:|---:|---:|---|')
    for backend in a.backends.split(','):
        for name in sorted(TOL):
            gdir = os.path.join(golden_root, name)
            path = model_file(a.shared, name)
            if not os.path.isdir(gdir) or not os.path.exists(path):
                print('| %s | %s | - | - | - | SKIP (missing) |' % (backend, name))
                continue
            problems, worst, cases = [], 0.0, 0
            for case in sorted(os.listdir(gdir)):
                if not case.endswith('.json') or case.startswith('greedy'):
                    continue
                g = json.load(open(os.path.join(gdir, case)))
                if not g.get('tokens'):
                    continue  # no tokens (a model without BOS on the empty text): no logits
                # inline rows, or the .f32 sidecar of a vocabulary above 1024
                golden_rows = g['logits'] if g.get('logits_inline') else read_rows(os.path.join(gdir, g['logits_file']), g['n_vocab'])
                out = os.path.join(tmp, 'logits.f32')
                run(a.exe, ['--logits', path, out, ','.join(map(str, g['tokens']))], backend)
                rows = read_rows(out, g['n_vocab'])
                cases += 1
                for i, grow in enumerate(golden_rows):
                    p, mx = compare(rows[i], grow, TOL[name])
                    worst = max(worst, mx)
                    if p:
                        problems.append('%s row %d: %s' % (case, i, p))
            # greedy through the KV cache
            g = json.load(open(os.path.join(gdir, 'greedy_once_upon.json')))
            steps = read_rows(os.path.join(gdir, g['logits_file']), g['n_vocab'])
            out = os.path.join(tmp, 'greedy.f32')
            run(a.exe, ['--greedy', path, out, str(g['n_gen']), ','.join(map(str, g['prompt_tokens']))], backend)
            ours = read_rows(out, g['n_vocab'])
            tokens = [argmax(r) for r in ours]
            agree = 0
            while agree < len(tokens) and tokens[agree] == g['generated'][agree]:
                agree += 1
            for s in range(agree):
                p, mx = compare(ours[s], steps[s], TOL[name])
                worst = max(worst, mx)
                if p:
                    problems.append('greedy step %d: %s' % (s, p))
            atol = TOL[name][0](max(abs(v) for v in steps[0]))
            first_tight = next((i for i, st in enumerate(g['steps']) if st['margin'] < 2 * atol), len(g['steps']))
            if agree < min(first_tight, len(tokens)):
                problems.append('greedy tokens diverge at step %d (golden margins are safe up to %d)' % (agree, first_tight))
            ok = not problems
            failures += 0 if ok else 1
            print('| %s | %s | %d | %.2e | %d/%d | %s |' % (backend, name, cases, worst, agree, len(tokens),
                                                        'PASS' if ok else 'FAIL: ' + '; '.join(problems[:3])))
            sys.stdout.flush()
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
