/**
 * Issue 17, defect 13: vega and vega-lite are optional peer dependencies, loaded only when report.html is
 * drawn. Without them everything else loads and the report fails with MISSING_PACKAGE naming the package.
 * A child process hides the packages from require (as an install without them would be).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { repoRoot } from '../helpers';

const HIDE_VEGA = `
const Module = require('module');
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  if (request === 'vega' || request === 'vega-lite' || request.startsWith('vega/') || request.startsWith('vega-lite/')) {
    const err = new Error("Cannot find module '" + request + "'");
    err.code = 'MODULE_NOT_FOUND';
    throw err;
  }
  return resolve.call(this, request, ...rest);
};
`;

test('without vega: the library and CLI load, the report is a MISSING_PACKAGE error naming vega', () => {
  const dist = path.join(repoRoot(), 'dist');
  const script = `${HIDE_VEGA}
const api = require(${JSON.stringify(path.join(dist, 'lib', 'index.js'))});
require(${JSON.stringify(path.join(dist, 'lib', 'cli', 'main.js'))});
const { buildReportHtml } = require(${JSON.stringify(path.join(dist, 'lib', 'report', 'html.js'))});
const { syntheticResults } = require(${JSON.stringify(path.join(dist, 'test', 'page', 'tasks_fixture.js'))});
buildReportHtml(syntheticResults(['sst2'])).then(
  () => console.log(JSON.stringify({ loaded: typeof api.loadModel, outcome: 'rendered' })),
  (err) => console.log(JSON.stringify({ loaded: typeof api.loadModel, outcome: err.code, message: err.message })),
);`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60000 });
  expect(r.stderr).toBe('');
  const out = JSON.parse(r.stdout) as { loaded: string; outcome: string; message: string };
  expect(out).toMatchObject({ loaded: 'function', outcome: 'MISSING_PACKAGE' });
  expect(out.message).toMatch(/package 'vega' is missing/);
  expect(out.message).toMatch(/npm install vega vega-lite/);
});

test('package.json: vega and vega-lite are optional peers (not installed for users) and devDependencies (installed by npm ci)', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot(), 'package.json'), 'utf8')) as Record<string, Record<string, unknown>>;
  for (const name of ['vega', 'vega-lite']) {
    expect(pkg.dependencies[name]).toBeUndefined();
    expect(pkg.devDependencies[name]).toBeDefined();
    expect(pkg.peerDependencies[name]).toBe(pkg.devDependencies[name]);
    expect(pkg.peerDependenciesMeta[name]).toEqual({ optional: true });
  }
});
