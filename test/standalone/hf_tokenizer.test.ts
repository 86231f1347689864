/**
 * Hugging Face tokenizer.json through @huggingface/tokenizers, behind the project's Tokenizer interface:
 * the fixtures' expected ids (from the independent BPE of make_fixtures.py), BOS per tokenizer_config.json,
 * special tokens, the padded vocabulary, decoding and streaming, and the GGUF tokenizer that convert writes.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Tokenizer as HfLib } from '@huggingface/tokenizers';
import { AdaInferError } from '../../lib/errors';
import { readHfConfig } from '../../lib/hf/config';
import { readHfTokenizer } from '../../lib/hf/folder';
import { HfTokenizer } from '../../lib/tokenizer';
import { TokenType } from '../../lib/tokenizer/types';
import { tmpDir } from '../helpers';
import { ALL_FIXTURES, LLAMA, OPT_PRE, copyFixture, expected } from './hf_fixtures';

function load(dir: string): HfTokenizer {
  return readHfTokenizer(dir, readHfConfig(dir));
}

const TEXTS = ['Hello world! The cat\'s ball.', 'naïve café ☕ 12345', '  two  spaces\n\nand lines', '', 'x'];

describe('Hugging Face tokenizer', () => {
  test('the library loads (CommonJS build) and runs offline', () => {
    const tj = JSON.parse(fs.readFileSync(path.join(OPT_PRE, 'tokenizer.json'), 'utf8'));
    const t = new HfLib(tj, {});
    expect(t.encode('Hello', { add_special_tokens: false }).ids.length).toBeGreaterThan(0);
  });

  for (const [name, dir] of Object.entries(ALL_FIXTURES)) {
    describe(name, () => {
      const tok = load(dir);
      const exp = expected(dir);

      test('byte-level BPE, BOS from tokenizer_config.json', () => {
        expect(tok.model).toBe('gpt2');
        expect(tok.addBos).toBe(true);
        expect(tok.addEos).toBe(false);
        if (name === 'llama') {
          expect(tok.bosId).toBe(1);
          expect(tok.eosId).toBe(2);
        } else {
          // OPT prepends </s> (id 2), which is also its EOS
          expect(tok.bosId).toBe(2);
          expect(tok.eosId).toBe(2);
        }
        expect(tok.eogIds.has(2)).toBe(true);
      });

      test('ids as the reference BPE (special tokens split out when parsed)', () => {
        for (const t of exp.tokenize) {
          expect(tok.encode(t.text, { parseSpecial: true })).toEqual(t.ids);
          expect(tok.encode(t.text, { addSpecial: false, parseSpecial: true })).toEqual(t.idsNoSpecial);
          if (!t.text.includes('</s>')) expect(tok.encode(t.text)).toEqual(t.ids);
        }
      });

      test('special-token text is plain text unless parseSpecial', () => {
        const ids = tok.encode('a </s> b', { addSpecial: false });
        expect(ids).not.toContain(2);
        expect(tok.decode(ids)).toBe('a </s> b');
        expect(tok.encode('a </s> b', { addSpecial: false, parseSpecial: true })).toContain(2);
      });

      test('decode and the stream decoder round-trip the text', () => {
        for (const text of [...TEXTS, ...exp.tokenize.map((t) => t.text)]) {
          const ids = tok.encode(text, { addSpecial: false });
          expect(tok.decode(ids)).toBe(text);
          const d = tok.createDecoder();
          let s = '';
          for (const id of ids) s += d.push(id);
          s += d.flush();
          expect(s).toBe(text);
        }
        // BOS is a control token: no text, unless asked for
        expect(tok.decode(tok.encode('hi'))).toBe('hi');
        expect(tok.decode([tok.bosId!], { unparseSpecial: true })).toBe(tok.tokenText(tok.bosId!));
      });

      test('token metadata', () => {
        expect(tok.tokenType(tok.bosId!)).toBe(TokenType.Control);
        const ids = tok.encode(' the', { addSpecial: false });
        expect(ids).toHaveLength(1); // a merged token of the training text: "Ġthe"
        expect(tok.tokenType(ids[0])).toBe(TokenType.Normal);
        expect(tok.tokenText(ids[0])).toBe('\u0120the');
        expect(Buffer.from(tok.tokenToPiece(ids[0])).toString()).toBe(' the');
        expect(() => tok.tokenText(tok.vocabSize)).toThrow(AdaInferError);
      });
    });
  }

  test('an embedding larger than the vocabulary pads it with unused tokens (OPT: 328 rows, 320 tokens)', () => {
    const tok = load(OPT_PRE);
    expect(tok.vocabSize).toBe(328);
    expect(tok.definedTokens).toBe(320);
    expect(tok.tokenText(325)).toBe('[PAD325]');
    expect(tok.tokenType(325)).toBe(TokenType.Unused);
    expect(tok.decode([325])).toBe('');
  });

  test("GPT-2's slow-tokenizer files (vocab.json + merges.txt, as facebook/opt-* ship) instead of tokenizer.json", () => {
    const dir = tmpDir('adainfer-slowtok-');
    try {
      const d = copyFixture(OPT_PRE, dir, 'opt-slow');
      const tj = JSON.parse(fs.readFileSync(path.join(d, 'tokenizer.json'), 'utf8'));
      fs.writeFileSync(path.join(d, 'vocab.json'), JSON.stringify(tj.model.vocab));
      fs.writeFileSync(path.join(d, 'merges.txt'), '#version: 0.2\n' + tj.model.merges.join('\n') + '\n');
      fs.rmSync(path.join(d, 'tokenizer.json'));
      const tok = load(d);
      const exp = expected(OPT_PRE);
      for (const t of exp.tokenize) expect(tok.encode(t.text, { parseSpecial: true })).toEqual(t.ids);
      expect(tok.bosId).toBe(2);
      expect(tok.tokenType(2)).toBe(TokenType.Control);
      fs.rmSync(path.join(d, 'merges.txt'));
      expect(() => load(d)).toThrow(/no tokenizer\.json \(nor GPT-2's vocab\.json \+ merges\.txt\)/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('BOS handling: add_bos_token false, a TemplateProcessing post-processor, config.json ids', () => {
    const tj = JSON.parse(fs.readFileSync(path.join(LLAMA, 'tokenizer.json'), 'utf8'));
    const noBos = new HfTokenizer({ tokenizer: tj, tokenizerConfig: { add_bos_token: false, bos_token: '<s>' } });
    expect(noBos.addBos).toBe(false);
    expect(noBos.encode('hi')[0]).not.toBe(1);
    const template = {
      ...tj,
      post_processor: {
        type: 'TemplateProcessing',
        single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
        pair: [],
        special_tokens: {},
      },
    };
    const viaTemplate = new HfTokenizer({ tokenizer: template, config: { eos_token_id: [2, 0] } });
    expect(viaTemplate.addBos).toBe(true);
    expect(viaTemplate.bosId).toBe(1);
    expect(viaTemplate.encode('hi')[0]).toBe(1);
    expect(viaTemplate.eogIds.has(0)).toBe(true); // every eos_token_id of config.json ends generation
    const fromConfig = new HfTokenizer({ tokenizer: tj, config: { bos_token_id: 1, eos_token_id: 2 }, defaultAddBos: true });
    expect(fromConfig.bosId).toBe(1);
    expect(fromConfig.encode('hi')[0]).toBe(1);
  });

  test('invalid tokenizer.json is a TOKENIZER error', () => {
    const tj = JSON.parse(fs.readFileSync(path.join(LLAMA, 'tokenizer.json'), 'utf8'));
    const bad = (t: unknown, cfg?: unknown) => () => new HfTokenizer({ tokenizer: t, tokenizerConfig: cfg });
    expect(bad(3)).toThrow(/not a JSON object/);
    expect(bad({ ...tj, model: { ...tj.model, type: 'Unigram' } })).toThrow(/Unigram.*not supported/);
    expect(bad({ ...tj, added_tokens: [{ id: 5, content: '<x>', special: true }] })).toThrow(/id 5 is both/);
    expect(bad(tj, { bos_token: '<nope>' })).toThrow(/bos_token "<nope>" is not in the vocabulary/);
    expect(bad(tj, { add_bos_token: 'yes' })).toThrow(/add_bos_token must be a boolean/);
    try {
      bad(3)();
    } catch (e) {
      expect((e as AdaInferError).code).toBe('TOKENIZER');
    }
  });
});
