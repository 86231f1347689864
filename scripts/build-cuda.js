#!/usr/bin/env node
/*
 * `npm run build:cuda`: builds the addon with the CUDA backend (CMake through cmake-js; needs the CUDA toolkit,
 * not a GPU) and stages it as the optional per-platform package @adainfer/cuda-<platform>-<arch> in
 * build/cuda-package/, packed there as a tarball. The main package loads it when it is installed beside it and a
 * device works (lib/bindings/native.ts), else its own CPU addon. The CUDA runtime is linked statically, and the
 * CUDA addon holds every CPU kernel too.
 *   --no-compile  stage an existing build/cuda/Release/adainfer.node again
 *   --dev         also copy it to build/Release/adainfer.node, the local development build (the old behaviour)
 */
'use strict';
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

const root = path.resolve(__dirname, '..');
const args = new Set(process.argv.slice(2));
const main = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const name = `@adainfer/cuda-${process.platform}-${process.arch}`;
const built = path.join(root, 'build', 'cuda', 'Release', 'adainfer.node');
const run = (cmd, argv, cwd = root) => execFileSync(cmd, argv, { cwd, stdio: 'inherit', shell: process.platform === 'win32' });

if (!args.has('--no-compile'))
  run(path.join(root, 'node_modules', '.bin', 'cmake-js'), ['compile', '-O', 'build/cuda', '--CDADAINFER_CUDA=ON', '--CDADAINFER_TESTS=OFF']);
if (!fs.existsSync(built)) throw new Error(`${built} is missing: the CUDA build did not produce the addon`);

const stage = path.join(root, 'build', 'cuda-package');
fs.rmSync(stage, { recursive: true, force: true });
fs.mkdirSync(stage, { recursive: true });
fs.copyFileSync(built, path.join(stage, 'adainfer.node'));
fs.writeFileSync(path.join(stage, 'index.js'), "'use strict';\nexports.addonPath = require('path').join(__dirname, 'adainfer.node');\n");
fs.writeFileSync(
  path.join(stage, 'package.json'),
  JSON.stringify(
    {
      name,
      version: main.version,
      description: `adainfer's native addon with the CUDA backend, for ${process.platform}-${process.arch} (optional: install beside adainfer)`,
      license: main.license,
      os: [process.platform],
      cpu: [process.arch],
      main: 'index.js',
      files: ['index.js', 'adainfer.node'],
      peerDependencies: { adainfer: main.version },
    },
    null,
    2,
  ) + '\n',
);
run('npm', ['pack', '--pack-destination', stage], stage);
if (args.has('--dev')) {
  fs.mkdirSync(path.join(root, 'build', 'Release'), { recursive: true });
  fs.copyFileSync(built, path.join(root, 'build', 'Release', 'adainfer.node'));
}
console.log(`${name}: staged in ${path.relative(root, stage)}; install it beside adainfer with \`npm install ${path.relative(root, stage)}/*.tgz\``);
