#!/usr/bin/env node
/** The `adainfer` command line: one file per command, registered here. */
import { Command, CommanderError } from 'commander';
import { AdaInferError } from '../errors';
import { registerBench } from './bench';
import { registerBatch } from './batch';
import { registerConvert } from './convert';
import { registerEvalExit } from './eval_exit';
import { registerEvalTasks } from './eval_tasks';
import { registerGenerate } from './generate';
import { registerQuantize } from './quantize';
import { registerTrainExit } from './train_exit';

export async function main(argv: string[]): Promise<number> {
  const program = new Command('adainfer')
    .description('LLM inference for Node.js with AdaInfer early exit')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  registerGenerate(program);
  registerQuantize(program);
  registerConvert(program);
  registerBench(program);
  registerTrainExit(program);
  registerEvalExit(program);
  registerBatch(program);
  registerEvalTasks(program);
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    if (err instanceof AdaInferError) {
      process.stderr.write(`adainfer: error [${err.code}]: ${err.message}\n`);
      return err.code === 'INVALID_OPTION' ? 2 : 1;
    }
    process.stderr.write(`adainfer: internal error: ${(err as Error).stack ?? String(err)}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv).then((code) => {
    process.exitCode = code;
  });
}
