/**
 * eval-tasks' prompt builders, label tokens and demonstration draws on fixed examples, with the bundled
 * model's tokenizer (SentencePiece, 512 tokens: every tokenization pitfall shows up in it). No native addon.
 */
import { readGGUF } from '../../lib/gguf';
import { tokenizerMetadataFromGGUF } from '../../lib/model/gguf_tokenizer';
import { createTokenizer } from '../../lib/tokenizer';
import { buildPrompt, PROMPT_FORMATS, TaskItem, TaskName } from '../../lib/tasks/formats';
import { labelFollows, promptTokens, resolveLabels } from '../../lib/tasks/labels';
import { demoPicker, permutation, prepareExamples } from '../../lib/tasks/prepare';
import { cleanAgNews } from '../../lib/tasks/tasks';
import { parseCsv } from '../../lib/tasks/csv';
import { BUNDLED_MODEL } from '../helpers';

const meta = tokenizerMetadataFromGGUF(readGGUF(BUNDLED_MODEL));
const tok = createTokenizer(meta);
const noSpace = createTokenizer({ ...meta, addSpacePrefix: false });
const pieces = (ids: number[]) => ids.map((id) => tok.tokenText(id));

const QUERIES: Record<TaskName, TaskItem> = {
  sst2: { id: 'q', fields: { sentence: 'a gorgeous , witty , seductive movie .' }, answer: 1 },
  agnews: { id: 'q', fields: { article: 'Stocks rise. Markets gained on Friday.' }, answer: 2 },
  csqa: { id: 'q', fields: { question: 'Where do you keep milk?' }, options: ['fridge', 'oven', 'car', 'shoe', 'bed'], answer: 0 },
  mmlu: {
    id: 'q',
    fields: { question: 'What is the powerhouse of the cell?', subject: 'high school biology' },
    options: ['nucleus', 'mitochondrion', 'ribosome', 'wall'],
    answer: 1,
    group: 'high_school_biology',
  },
  copa: { id: 'q', fields: { premise: 'The man turned on the faucet, therefore' }, options: ['the toilet filled with water.', 'water flowed from the spout.'], answer: 1 },
};

const DEMOS: Record<TaskName, TaskItem> = {
  sst2: { id: 'd', fields: { sentence: 'the acting is bad .' }, answer: 0 },
  agnews: { id: 'd', fields: { article: 'Team wins cup. A late goal decided it.' }, answer: 1 },
  csqa: { id: 'd', fields: { question: 'What do you use to cut paper?' }, options: ['spoon', 'scissors', 'cup', 'rope', 'sock'], answer: 1 },
  mmlu: {
    id: 'd',
    fields: { question: 'Which molecule carries genetic information?', subject: 'high school biology' },
    options: ['DNA', 'water', 'salt', 'fat'],
    answer: 0,
    group: 'high_school_biology',
  },
  copa: { id: 'd', fields: { premise: 'The girl was hungry, therefore' }, options: ['she ate an apple.', 'she went to sleep.'], answer: 0 },
};

describe('prompt formats: exact text', () => {
  const expected0: Record<TaskName, string> = {
    sst2: 'Review: a gorgeous , witty , seductive movie .\nSentiment:',
    agnews:
      'Classify the news articles into the categories of World, Sports, Business, and Technology.\n\n' +
      'Article: Stocks rise. Markets gained on Friday.\nAnswer:',
    csqa: 'Question: Where do you keep milk?\nA. fridge\nB. oven\nC. car\nD. shoe\nE. bed\nAnswer:',
    mmlu:
      'The following are multiple choice questions (with answers) about high school biology.\n\n' +
      'What is the powerhouse of the cell?\nA. nucleus\nB. mitochondrion\nC. ribosome\nD. wall\nAnswer:',
    copa: 'The man turned on the faucet, therefore\nA. the toilet filled with water.\nB. water flowed from the spout.\nAnswer:',
  };
  const expected1: Record<TaskName, string> = {
    sst2: 'Review: the acting is bad .\nSentiment: negative\n\nReview: a gorgeous , witty , seductive movie .\nSentiment:',
    agnews:
      'Classify the news articles into the categories of World, Sports, Business, and Technology.\n\n' +
      'Article: Team wins cup. A late goal decided it.\nAnswer: Sports\n\n' +
      'Article: Stocks rise. Markets gained on Friday.\nAnswer:',
    csqa:
      'Question: What do you use to cut paper?\nA. spoon\nB. scissors\nC. cup\nD. rope\nE. sock\nAnswer: B\n\n' +
      'Question: Where do you keep milk?\nA. fridge\nB. oven\nC. car\nD. shoe\nE. bed\nAnswer:',
    mmlu:
      'The following are multiple choice questions (with answers) about high school biology.\n\n' +
      'Which molecule carries genetic information?\nA. DNA\nB. water\nC. salt\nD. fat\nAnswer: A\n\n' +
      'What is the powerhouse of the cell?\nA. nucleus\nB. mitochondrion\nC. ribosome\nD. wall\nAnswer:',
    copa:
      'The girl was hungry, therefore\nA. she ate an apple.\nB. she went to sleep.\nAnswer: A\n\n' +
      'The man turned on the faucet, therefore\nA. the toilet filled with water.\nB. water flowed from the spout.\nAnswer:',
  };
  for (const task of Object.keys(QUERIES) as TaskName[]) {
    test(`${task}: zero-shot and one-shot`, () => {
      expect(buildPrompt(PROMPT_FORMATS[task], QUERIES[task], [])).toBe(expected0[task]);
      expect(buildPrompt(PROMPT_FORMATS[task], QUERIES[task], [DEMOS[task]])).toBe(expected1[task]);
    });
  }

  test('AG News text: backslash line breaks and numeric entities are cleaned', () => {
    expect(cleanAgNews('SPACE.com - TORONTO -- A second\\team won  #36;10 million')).toBe('SPACE.com - TORONTO -- A second team won $10 million');
  });
});

describe('label tokens (bundled SentencePiece-512 tokenizer)', () => {
  // [boundary, scored pieces, multi-token flags, last pieces of the zero-shot prompt]
  const expected: Record<TaskName, [string, string[], boolean[], string[]]> = {
    sst2: ['joined', ['▁ne', '▁p'], [true, true], ['ent', 'im', 'ent', ':']],
    agnews: ['joined', ['▁', '▁S', '▁B', '▁T'], [true, true, true, true], ['s', 'w', 'er', ':']],
    csqa: ['space-in-prompt', ['A', 'B', 'C', 'D', 'E'], [false, false, false, false, false], ['w', 'er', ':', '▁']],
    mmlu: ['space-in-prompt', ['A', 'B', 'C', 'D'], [false, false, false, false], ['w', 'er', ':', '▁']],
    copa: ['joined', ['▁A', '▁B'], [false, false], ['s', 'w', 'er', ':']],
  };
  for (const task of Object.keys(expected) as TaskName[]) {
    test(task, () => {
      const text = buildPrompt(PROMPT_FORMATS[task], QUERIES[task], []);
      const s = resolveLabels(tok, noSpace, text, PROMPT_FORMATS[task].labels, task);
      const [boundary, scored, multi, tail] = expected[task];
      expect(s.boundary).toBe(boundary);
      expect(pieces(s.labels.map((l) => l.scored))).toEqual(scored);
      expect(s.labels.map((l) => l.multiToken)).toEqual(multi);
      expect(s.sharedPrefix).toEqual([]);
      const ids = promptTokens(tok, s, text);
      expect(ids[0]).toBe(tok.bosId);
      expect(pieces(ids.slice(-4))).toEqual(tail);
      // The gold label written after the prompt (as in a demonstration) starts with its scored token.
      expect(labelFollows(tok, s, text, ids, QUERIES[task].answer)).toBe(true);
      if (multi.some((m) => m)) expect(s.notes.join(' ')).toMatch(/scored by their first token/);
      if (boundary === 'space-in-prompt') expect(s.notes.join(' ')).toMatch(/both start with "▁"|all start with "▁"/);
    });
  }

  test('a leading space is never tokenized on its own with the label: " positive" continues the prompt', () => {
    const s = resolveLabels(tok, noSpace, 'Sentiment:', ['positive', 'negative']);
    expect(s.labels[0].pieces).toEqual(['▁p', 'o', 's', 'it', 'i', 've']);
    // Tokenized alone, the word would get a second space piece: the pitfall the joined boundary avoids.
    expect(pieces(tok.encode(' positive', { addSpecial: false }))[0]).toBe('▁');
  });

  test('tokens shared by every label move into the prompt', () => {
    const s = resolveLabels(tok, noSpace, 'Answer:', ['World', 'Wide']);
    expect(pieces(s.sharedPrefix)).toEqual(['▁', 'W']);
    expect(s.labels.map((l) => l.pieces[0])).toEqual(['or', 'ide']);
    expect(pieces(promptTokens(tok, s, 'Answer:')).slice(-3)).toEqual([':', '▁', 'W']);
    expect(s.notes[0]).toMatch(/every label starts with "▁\|W"/);
  });

  test('labels that cannot be told apart by one token are an error naming them', () => {
    expect(() => resolveLabels(tok, noSpace, 'Answer:', ['the', 'then'], 'demo')).toThrow(/demo: labels cannot be told apart by one token: .*'the' and 'then' both start with "▁the"/);
    expect(() => resolveLabels(tok, noSpace, 'Answer:', ['A', 'A'])).toThrow(/same word/);
  });
});

describe('demonstrations', () => {
  const pool: TaskItem[] = Array.from({ length: 20 }, (_, i) => ({ id: `p${i}`, fields: { sentence: `s${i}` }, answer: i % 2, group: i < 10 ? 'g1' : 'g2' }));

  test('seeded, from the query group, never the query itself, the same for every query outside the pool', () => {
    const pick = demoPicker(pool, 3, 7);
    const a = pick({ id: 'x', fields: {}, answer: 0, group: 'g1' });
    expect(a).toHaveLength(3);
    expect(a.every((d) => d.group === 'g1')).toBe(true);
    expect(pick({ id: 'y', fields: {}, answer: 1, group: 'g1' })).toEqual(a);
    expect(demoPicker(pool, 3, 7)({ id: 'x', fields: {}, answer: 0, group: 'g1' })).toEqual(a);
    expect(demoPicker(pool, 3, 8)({ id: 'x', fields: {}, answer: 0, group: 'g1' }).map((d) => d.id)).not.toEqual(a.map((d) => d.id));
    const self = pool[Number(a[0].id.slice(1))];
    expect(pick(self)).not.toContain(self);
    expect(pick(self)).toHaveLength(3);
    expect(demoPicker(pool, 0, 7)(self)).toEqual([]);
  });

  test('permutation is a seeded permutation', () => {
    expect([...permutation(10, 3)].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(permutation(10, 3)).toEqual(permutation(10, 3));
  });

  test('prompts that do not fit drop demonstrations, then are skipped; limit counts fitting ones', () => {
    const f = PROMPT_FORMATS.sst2;
    const items: TaskItem[] = [
      { id: 'short', fields: { sentence: 'good .' }, answer: 1 },
      { id: 'long', fields: { sentence: 'a '.repeat(200) + '.' }, answer: 0 },
      { id: 'short2', fields: { sentence: 'bad .' }, answer: 0 },
    ];
    const s = resolveLabels(tok, noSpace, buildPrompt(f, items[0], []), f.labels);
    const demos = demoPicker(pool.map((p) => ({ ...p, group: undefined, fields: { sentence: 'x '.repeat(20) + '.' } })), 2, 1);
    const oneDemo = promptTokens(tok, s, buildPrompt(f, items[0], demos(items[0]).slice(1))).length;
    const set = prepareExamples(items, f, tok, s, demos, { shots: 2, seed: 1, maxTokens: oneDemo });
    expect(set.skipped).toBe(1);
    expect(set.examples.map((e) => e.id).sort()).toEqual(['short', 'short2']);
    expect(set.examples.find((e) => e.id === 'short')!.shots).toBe(1);
    expect(set.shotsReduced).toBeGreaterThanOrEqual(1);
    expect(set.mismatches).toBe(0);
    expect(prepareExamples(items, f, tok, s, demos, { shots: 2, seed: 1, maxTokens: oneDemo, limit: 1 }).examples).toHaveLength(1);
  });
});

describe('CSV', () => {
  test('quoted fields with commas, quotes and newlines; CRLF; blank lines', () => {
    expect(parseCsv('a,b\r\n"x, y","say ""hi""\nthere"\n\n1,2\n', 'f')).toEqual([
      ['a', 'b'],
      ['x, y', 'say "hi"\nthere'],
      ['1', '2'],
    ]);
    expect(() => parseCsv('a,"b\n', 'f.csv')).toThrow(/f.csv:2: a quoted field is not closed/);
  });
});
