#!/usr/bin/env node
/*
 * `npm install` step of adainfer. An installed package carries prebuilt addons in prebuilds/<platform>-<arch>/
 * (made by `npm run prebuild`); when one fits this platform, libc and Node, and loads, nothing is compiled.
 * Otherwise — another platform, a git checkout (whose sources may be newer than any prebuild), or
 * ADAINFER_BUILD_FROM_SOURCE=1 / `npm install --build-from-source` — it says why and compiles the addon from
 * source with node-gyp (a C++ compiler, make and python3 are needed then).
 * Plain JavaScript: it runs before anything is compiled.
 */
'use strict';
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const root = path.resolve(__dirname, '..');

function prebuiltAddon() {
  if (process.env.ADAINFER_BUILD_FROM_SOURCE === '1' || process.env.npm_config_build_from_source === 'true')
    return { reason: 'a build from source was asked for' };
  if (fs.existsSync(path.join(root, '.git'))) return { reason: 'this is a git checkout' };
  let file;
  try {
    // node-gyp-build's own matching (platform, arch, libc, N-API): the file the loader will pick.
    file = require('node-gyp-build').path(root);
  } catch (err) {
    return { reason: `no prebuilt addon fits ${process.platform}-${process.arch}` };
  }
  const rel = path.relative(path.join(root, 'prebuilds'), file);
  if (rel.startsWith('..') || path.isAbsolute(rel)) return { reason: 'no prebuilt addon fits (only a local build was found)' };
  try {
    require(file);
  } catch (err) {
    return { reason: `the prebuilt addon ${path.relative(root, file)} does not load here (${err.message.split('\n')[0]})` };
  }
  return { file };
}

const found = prebuiltAddon();
if (found.file) {
  console.log(`adainfer: using the prebuilt addon ${path.relative(root, found.file)}`);
  process.exit(0);
}
console.log(`adainfer: ${found.reason}; compiling the addon from source with node-gyp (needs a C++ compiler, make and python3)`);
const r = spawnSync('node-gyp', ['rebuild'], { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' });
if (r.error) {
  console.error(`adainfer: could not run node-gyp: ${r.error.message}`);
  process.exit(1);
}
process.exit(r.status === null ? 1 : r.status);
