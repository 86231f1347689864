/**
 * report.html in a real browser: headless Chromium (Debian's `chromium`, driven by playwright-core, which
 * downloads nothing) opens the page from a file, offline, and it must render the results table and every plot
 * without a console error, a page error or a request that leaves the file. Skipped, with a message, when no
 * Chromium is installed (`apt-get install chromium`; .ci/run installs it). CHROMIUM_PATH overrides the path.
 */
import * as fs from 'fs';
import * as path from 'path';
import { chromium, Browser } from 'playwright-core';
import { buildReportHtml } from '../../lib/report/html';
import { Results } from '../../lib/report/schema';
import { BUNDLED_MODEL, tmpDir } from '../helpers';
import { runCli, syntheticResults, writeFixtureData } from './tasks_fixture';

const CHROMIUM = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => p && fs.existsSync(p));

interface PageReport {
  errors: string[];
  rows: { task: string; cells: number }[];
  plots: { id: string; width: number; height: number; marks: number }[];
}

async function openReport(browser: Browser, file: string): Promise<PageReport> {
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') errors.push(`console.${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => errors.push(`request failed: ${r.url()}`));
  await page.route('**/*', (route) => (route.request().url().startsWith('file:') ? route.continue() : (errors.push(`external request: ${route.request().url()}`), route.abort())));
  await page.goto('file://' + file, { waitUntil: 'load' });
  // A string: the project compiles without the DOM library; this runs in the page.
  const result = (await page.evaluate(`({
    rows: Array.from(document.querySelectorAll('table#results tbody tr')).map((tr) => ({ task: tr.getAttribute('data-task') || '', cells: tr.querySelectorAll('td').length })),
    plots: Array.from(document.querySelectorAll('figure.plot')).map((f) => {
      const svg = f.querySelector('svg');
      const box = svg ? svg.getBoundingClientRect() : { width: 0, height: 0 };
      return { id: f.id, width: box.width, height: box.height, marks: svg ? svg.querySelectorAll('.role-mark > path, .role-mark > g, .role-mark > line').length : 0 };
    }),
  })`)) as Omit<PageReport, 'errors'>;
  await page.close();
  return { errors, ...result };
}

function expectRendered(p: PageReport, tasks: string[]): void {
  expect(p.errors).toEqual([]);
  expect(p.rows).toEqual(tasks.map((task) => ({ task, cells: 15 })));
  expect(p.plots.map((x) => x.id).sort()).toEqual(['plot-accuracy', 'plot-speedup', ...tasks.map((t) => `hist-${t}`)].sort());
  for (const plot of p.plots) {
    expect({ id: plot.id, drawn: plot.width > 100 && plot.height > 100 && plot.marks > 0 }).toEqual({ id: plot.id, drawn: true });
  }
}

if (!CHROMIUM) {
  describe.skip('report.html in headless Chromium (skipped: no chromium at /usr/bin/chromium; install it with `apt-get install chromium` or set CHROMIUM_PATH)', () => {
    test('needs chromium', () => undefined);
  });
} else {
  describe('report.html in headless Chromium', () => {
    let browser: Browser;
    beforeAll(async () => {
      browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
    });
    afterAll(async () => {
      await browser?.close();
    });

    test('made-up results: the table and every plot render, no console error, no external request', async () => {
      const dir = tmpDir('adainfer-page-');
      const file = path.join(dir, 'report.html');
      const r = syntheticResults();
      fs.writeFileSync(file, await buildReportHtml(r));
      expectRendered(await openReport(browser, file), Object.keys(r.tasks));
      fs.rmSync(dir, { recursive: true, force: true });
    });

    test('the checks catch what they look for: a console error, an external request, a missing plot', async () => {
      const dir = tmpDir('adainfer-page-');
      const file = path.join(dir, 'bad.html');
      fs.writeFileSync(file, '<!DOCTYPE html><table id="results"><tbody></tbody></table><img src="http://example.invalid/x.png"><script>console.error("boom")</script>');
      const p = await openReport(browser, file);
      expect(p.errors.join('\n')).toMatch(/console.error: boom/);
      expect(p.errors.join('\n')).toMatch(/external request: http:\/\/example.invalid\/x.png/);
      expect(p.plots).toEqual([]);
      fs.rmSync(dir, { recursive: true, force: true });
    });

    // Issue 17, defect 12: at 1400 px the accuracy plot of one task was a 220 px strip narrower than its own
    // legend; at 700 px the table pushed the whole page sideways.
    async function layoutAt(file: string, width: number) {
      const page = await browser.newPage({ viewport: { width, height: 900 } });
      await page.goto('file://' + file, { waitUntil: 'load' });
      const m = (await page.evaluate(`(() => {
        const fig = document.querySelector('figure#plot-accuracy');
        const w = (el) => (el ? el.getBoundingClientRect().width : 0);
        const cells = Array.from(fig.querySelectorAll('g.mark-group.role-scope.cell path.background')).map((e) => e.getBoundingClientRect());
        return {
          plots: cells.length === 0 ? 0 : Math.max(...cells.map((c) => c.right)) - Math.min(...cells.map((c) => c.left)),
          legend: w(fig.querySelector('g.role-legend')),
          figure: w(fig.querySelector('svg')),
          pageScroll: document.documentElement.scrollWidth - document.documentElement.clientWidth,
        };
      })()`)) as { plots: number; legend: number; figure: number; pageScroll: number };
      await page.close();
      return m;
    }

    test('layout: the accuracy plots span at least their legend at 1400 px; nothing scrolls the page at 700 px', async () => {
      const dir = tmpDir('adainfer-page-');
      for (const tasks of [['sst2'], ['sst2', 'agnews', 'csqa', 'mmlu', 'copa']]) {
        const file = path.join(dir, `report-${tasks.length}.html`);
        fs.writeFileSync(file, await buildReportHtml(syntheticResults(tasks)));
        const wide = await layoutAt(file, 1400);
        expect(wide.legend).toBeGreaterThan(100);
        // The facets' row (one plot for one task) spans at least its legend and 40% of the page.
        expect({ tasks: tasks.length, atLeastLegend: wide.plots >= wide.legend, wide: wide.plots >= 0.4 * 1400 }).toEqual({ tasks: tasks.length, atLeastLegend: true, wide: true });
        expect(wide.pageScroll).toBe(0);
        const narrow = await layoutAt(file, 700);
        expect({ tasks: tasks.length, pageScroll: narrow.pageScroll }).toEqual({ tasks: tasks.length, pageScroll: 0 });
        expect(narrow.figure).toBeLessThanOrEqual(700);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    });

    test('a real eval-tasks run on the bundled model renders the same way', async () => {
      const data = writeFixtureData(tmpDir('adainfer-page-data-'));
      const out = tmpDir('adainfer-page-out-');
      const run = await runCli(['eval-tasks', '-m', BUNDLED_MODEL, '--data-dir', data, '--limit', '4', '--train-exit', '--train-limit', '8', '--out', out, '--threads', '1', '--json']);
      expect(run.code).toBe(0);
      const r = JSON.parse(run.stdout) as Results;
      expectRendered(await openReport(browser, path.join(out, 'report.html')), Object.keys(r.tasks));
      fs.rmSync(data, { recursive: true, force: true });
      fs.rmSync(out, { recursive: true, force: true });
    });
  });
}
