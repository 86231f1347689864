/** results.json's schema and report.html's content, on made-up results (no model, no browser). */
import { buildReportHtml } from '../../lib/report/html';
import { Results, validateResults } from '../../lib/report/schema';
import { syntheticResults } from '../page/tasks_fixture';

const clone = (r: Results): Results => JSON.parse(JSON.stringify(r));

describe('results.json schema', () => {
  test('a complete results object is valid, also after a JSON round trip (null thresholds)', () => {
    const r = syntheticResults();
    expect(validateResults(r)).toEqual([]);
    expect(validateResults(clone(r))).toEqual([]);
  });

  test('each required field of the issue is checked', () => {
    for (const field of ['n', 'accuracyFull', 'accuracyExit', 'agreement', 'meanLayers', 'pruningRatio', 'secondsFull', 'secondsExit', 'speedup', 'exitHistogram']) {
      const r = clone(syntheticResults(['sst2'])) as unknown as { tasks: Record<string, Record<string, unknown>> };
      delete r.tasks.sst2[field];
      expect(validateResults(r)).toEqual([`tasks.sst2.${field} is missing`]);
    }
    for (const field of ['name', 'fingerprint', 'layers']) {
      const r = clone(syntheticResults(['sst2'])) as unknown as { model: Record<string, unknown> };
      delete r.model[field];
      expect(validateResults(r)).toContain(`model.${field} is missing`);
    }
    for (const field of ['shots', 'seed', 'exit']) {
      const r = clone(syntheticResults(['sst2'])) as unknown as { settings: Record<string, unknown> };
      delete r.settings[field];
      expect(validateResults(r)).toEqual([`settings.${field} is missing`]);
    }
  });

  test('wrong types, shares out of range, histograms that do not add up', () => {
    const r = clone(syntheticResults(['sst2']));
    (r.tasks.sst2 as unknown as Record<string, unknown>).accuracyFull = 1.5;
    (r.tasks.sst2 as unknown as Record<string, unknown>).speedup = 'fast';
    r.tasks.sst2.exitHistogram = [1, 2, 3];
    expect(validateResults(r)).toEqual([
      'tasks.sst2.accuracyFull must be a number in [0, 1]',
      'tasks.sst2.speedup must be null or a finite number', // null: the policy 'never' (issue 17, defect 10)
      'tasks.sst2.exitHistogram has 3 entries, expected one per layer (10)',
      'tasks.sst2.exitHistogram sums to 6, expected n = 20',
    ]);
    expect(validateResults(null)).toEqual(['results must be an object']);
    expect(validateResults({ ...syntheticResults(), format: 'other' })).toEqual(['results.format must be "adainfer.eval-tasks/1"']);
  });
});

describe('report.html', () => {
  test('self-contained: the table, one SVG per plot, escaped text, no external URL, no script', async () => {
    const r = syntheticResults();
    const html = await buildReportHtml(r);
    expect(html).toMatch(/^<!DOCTYPE html>/);
    expect(html.match(/<tr data-task=/g)).toHaveLength(5);
    for (const id of ['plot-accuracy', 'plot-speedup', 'hist-sst2', 'hist-agnews', 'hist-csqa', 'hist-mmlu', 'hist-copa'])
      expect(html).toMatch(new RegExp(`<figure class="plot" id="${id}"><svg `));
    expect(html.match(/<svg /g)).toHaveLength(7);
    expect(html).not.toMatch(/<script|(src|href)\s*=\s*["']?https?:|url\(\s*["']?https?:|@import/i);
    expect(html).toContain('a note with &lt;html&gt; &amp; &quot;quotes&quot;');
    expect(html).not.toContain('<html> &');
    expect(html).toContain('no &lt;b&gt; → &quot;▁no&quot;*');
  });

  test('says when accuracy is near chance, and not otherwise', async () => {
    const r = syntheticResults(['sst2']);
    expect(await buildReportHtml(r)).not.toMatch(/within 10 points of chance/);
    r.tasks.sst2.accuracyFull = 0.3;
    expect(await buildReportHtml(r)).toMatch(/within 10 points of chance on sst2: this model does not do this task, so those figures test the machinery/);
  });
});
