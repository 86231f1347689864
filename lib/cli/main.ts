#!/usr/bin/env node
/** The `adainfer` command line: one file per command, registered here. */
import * as fs from 'fs';
import * as path from 'path';
import { Command, CommanderError } from 'commander';
import { AdaInferError } from '../errors';
import { registerBench } from './bench';
import { registerBatch } from './batch';
import { registerChat } from './chat';
import { registerConvert } from './convert';
import { registerEvalExit } from './eval_exit';
import { registerEvalTasks } from './eval_tasks';
import { registerGenerate } from './generate';
import { exitQuietlyOnClosedStdout, isSystemError, printWarningsAsCli } from './output';
import { registerQuantize } from './quantize';
import { registerServe } from './serve';
import { registerTrainExit } from './train_exit';
import { registerWorker } from './worker';

export async function main(argv: string[]): Promise<number> {
  const program = new Command('adainfer')
    .description('LLM inference for Node.js with AdaInfer early exit')
    .version(packageVersion(), '-V, --version', 'print the version')
    .exitOverride()
    .enablePositionalOptions() // so that `batch`'s options and those of its subcommands (batch submit --in) stay apart
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  registerGenerate(program);
  registerChat(program);
  registerQuantize(program);
  registerConvert(program);
  registerBench(program);
  registerTrainExit(program);
  registerEvalExit(program);
  registerBatch(program);
  registerEvalTasks(program);
  registerServe(program);
  registerWorker(program);
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    if (err instanceof AdaInferError) {
      process.stderr.write(`adainfer: error [${err.code}]: ${err.message}\n`);
      return err.code === 'INVALID_OPTION' ? 2 : 1;
    }
    // A failed system call the command did not anticipate (a folder removed mid-run, a full disk): the
    // message names the path and the errno, which is what a user can act on; no stack trace.
    if (isSystemError(err)) {
      process.stderr.write(`adainfer: error [${err.code}]: ${err.message}\n`);
      return 1;
    }
    process.stderr.write(`adainfer: internal error: ${(err as Error).stack ?? String(err)}\n`);
    return 1;
  }
}

/** The version in package.json (dist/lib/cli/main.js sits three folders below it, in the repo and in the package). */
function packageVersion(): string {
  return (JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as { version: string }).version;
}

if (require.main === module) {
  exitQuietlyOnClosedStdout();
  printWarningsAsCli();
  main(process.argv).then((code) => {
    process.exitCode = code;
  });
}
