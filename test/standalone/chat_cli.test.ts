/**
 * `adainfer chat` through a pseudo-terminal: util-linux `script` runs the command on a pty (stdin and stdout are
 * terminals, so readline runs in terminal mode and ^C / ^D arrive as keys, as a user types them). `script` is used
 * rather than node-pty because it needs no native build and is part of every Linux base system; the test skips
 * with a message where it is absent (macOS ships a BSD `script` with other flags).
 *
 * Checked: replies stream and equal the API's ChatSession replies (greedy), the history carries over between turns,
 * Ctrl-C at the prompt clears the line, Ctrl-C during a reply cancels it (the conversation goes on without it),
 * /exit and Ctrl-D quit with status 0.
 */
import { ChildProcessWithoutNullStreams, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { loadModel } from '../../lib';
import { repoRoot, tmpDir } from '../helpers';

const CLI = path.join(repoRoot(), 'dist', 'lib', 'cli', 'main.js');
const STORY_TEMPLATE =
  "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}{{ m['content'] + eos_token }}{% else %}{{ m['content'] }}{% endif %}{% endfor %}";

const hasScript = spawnSync('script', ['--version'], { encoding: 'utf8' }).stdout?.includes('util-linux') ?? false;
if (!hasScript) console.warn('skipped: util-linux `script` is not installed (the pseudo-terminal of these tests)');
const describePty = hasScript ? describe : describe.skip;

/** The chat command on a pseudo-terminal, its output with terminal control sequences and \r removed. */
class PtyChat {
  private raw = '';
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcessWithoutNullStreams;

  constructor(args: string[]) {
    const command = [process.execPath, CLI, 'chat', ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
    this.child = spawn('script', ['-q', '-e', '-c', command, '/dev/null'], { stdio: 'pipe' });
    this.child.stdout.on('data', (d: Buffer) => (this.raw += d.toString('utf8')));
    this.child.stderr.on('data', (d: Buffer) => (this.raw += d.toString('utf8')));
    this.exited = new Promise((resolve) => this.child.on('exit', (code) => resolve(code)));
  }

  get output(): string {
    // eslint-disable-next-line no-control-regex
    return this.raw.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '');
  }

  /** Types keys (a line ends with \r, as the Enter key sends it). */
  type(keys: string): void {
    this.child.stdin.write(keys);
  }

  /** Waits until the output after `from` matches; returns the index after the match. */
  async waitFor(pattern: string | RegExp, from = 0, timeoutMs = 30000): Promise<number> {
    const t0 = Date.now();
    for (;;) {
      const out = this.output.slice(from);
      const m = typeof pattern === 'string' ? (out.includes(pattern) ? { index: out.indexOf(pattern), 0: pattern } : null) : pattern.exec(out);
      if (m) return from + m.index + m[0].length;
      if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${String(pattern)}; output so far:\n${this.output}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  kill(): void {
    this.child.kill('SIGKILL');
  }
}

describePty('adainfer chat on a pseudo-terminal', () => {
  const dir = tmpDir('adainfer-chat-cli-');
  const templateFile = path.join(dir, 'story.jinja');
  fs.writeFileSync(templateFile, STORY_TEMPLATE);
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** The API's greedy replies to `messages` in one conversation. */
  async function apiReplies(messages: string[], maxTokens: number): Promise<string[]> {
    const model = await loadModel(undefined, { threads: 1 });
    try {
      const chat = await model.createChatSession({ template: STORY_TEMPLATE });
      const out: string[] = [];
      for (const m of messages) out.push((await chat.send(m, { temperature: 0, maxTokens })).text);
      return out;
    } finally {
      await model.dispose();
    }
  }

  test('replies stream as the API gives them; Ctrl-C at the prompt clears the line; /exit quits with 0', async () => {
    const [r1, r2] = await apiReplies(['Once upon a time', 'The dog'], 20);
    const pty = new PtyChat(['--template', templateFile, '--temp', '0', '-n', '20', '--threads', '1']);
    try {
      let at = await pty.waitFor('> ');
      pty.type('Once upon a time\r');
      at = await pty.waitFor(r1 + '\n', at);
      at = await pty.waitFor('> ', at);
      pty.type('garbage that is dropped\x03');
      at = await pty.waitFor('^C\n', at);
      pty.type('The dog\r');
      at = await pty.waitFor(r2 + '\n', at);
      await pty.waitFor('> ', at);
      pty.type('/exit\r');
      expect(await pty.exited).toBe(0);
      expect(pty.output).not.toMatch(/garbage that is dropped[^\n]*\n[^>]/);
    } finally {
      pty.kill();
    }
  });

  test('Ctrl-C during a reply cancels it and the conversation goes on without it; Ctrl-D quits with 0', async () => {
    const [alone] = await apiReplies(['The dog'], 12);
    // Long replies (a context far beyond the model's, 2000 tokens): the ^C arrives while one is being written.
    const pty = new PtyChat(['--template', templateFile, '--temp', '0', '-n', '2000', '-c', '2048', '--threads', '1']);
    try {
      let at = await pty.waitFor('> ');
      pty.type('Once upon a time\r');
      at = await pty.waitFor('Once upon a time\n', at);
      at = await pty.waitFor(/\w/, at); // the reply has started
      pty.type('\x03');
      at = await pty.waitFor('[reply cancelled]\n', at);
      at = await pty.waitFor('> ', at);
      // The cancelled turn is not in the history: this reply is the one the message gets alone.
      pty.type('The dog\r');
      at = await pty.waitFor('The dog\n', at);
      at = await pty.waitFor(alone, at);
      pty.type('\x03');
      at = await pty.waitFor('[reply cancelled]\n', at);
      await pty.waitFor('> ', at);
      pty.type('\x04');
      expect(await pty.exited).toBe(0);
    } finally {
      pty.kill();
    }
  });
});
