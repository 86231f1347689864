/**
 * What every command does with the files it writes and the stream it prints to: an output path is checked
 * before any work starts (an unwritable path is an OUTPUT_PATH error naming the flag, not a stack trace after
 * minutes of work), and a closed stdout (`adainfer generate … | head`) ends the process quietly.
 */
import * as fs from 'fs';
import * as path from 'path';
import { AdaInferError } from '../errors';

/** Fails with OUTPUT_PATH unless `file` can be created or overwritten (its folder exists and is writable). */
export function checkWritableFile(file: string, flag: string): void {
  const resolved = path.resolve(file);
  const stat = statOrUndefined(resolved);
  if (stat?.isDirectory()) throw new AdaInferError('OUTPUT_PATH', `${flag} ${file}: is a directory, expected a file`);
  if (stat) return checkAccess(resolved, flag, file);
  const dir = path.dirname(resolved);
  const dirStat = statOrUndefined(dir);
  if (!dirStat) throw new AdaInferError('OUTPUT_PATH', `${flag} ${file}: the folder ${dir} does not exist`);
  if (!dirStat.isDirectory()) throw new AdaInferError('OUTPUT_PATH', `${flag} ${file}: ${dir} is not a folder`);
  checkAccess(dir, flag, file);
}

/** Fails with OUTPUT_PATH unless `dir` exists as a writable folder or can be created (its nearest existing parent is writable). */
export function checkWritableDir(dir: string, flag: string): void {
  let probe = path.resolve(dir);
  for (;;) {
    const stat = statOrUndefined(probe);
    if (stat) {
      if (!stat.isDirectory()) throw new AdaInferError('OUTPUT_PATH', `${flag} ${dir}: ${probe} is not a folder`);
      return checkAccess(probe, flag, dir);
    }
    const parent = path.dirname(probe);
    if (parent === probe) throw new AdaInferError('OUTPUT_PATH', `${flag} ${dir}: no existing parent folder`);
    probe = parent;
  }
}

function checkAccess(target: string, flag: string, given: string): void {
  try {
    fs.accessSync(target, fs.constants.W_OK);
  } catch {
    throw new AdaInferError('OUTPUT_PATH', `${flag} ${given}: ${target} is not writable`);
  }
}

function statOrUndefined(p: string): fs.Stats | undefined {
  try {
    return fs.statSync(p);
  } catch {
    return undefined;
  }
}

/** Node's error for a failed system call (fs, sockets): has `code` and `syscall`. */
export function isSystemError(err: unknown): err is NodeJS.ErrnoException & { syscall: string } {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string' && typeof (err as NodeJS.ErrnoException).syscall === 'string';
}

/**
 * A reader that closed stdout early (`| head`) is not an error: stop writing and exit 0, as cat and grep do.
 * Without a listener the EPIPE of the next write is an unhandled 'error' event and a crash.
 */
export function exitQuietlyOnClosedStdout(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED') process.exit(0);
    throw err;
  });
}

/**
 * The library reports soft problems (more threads than CPUs) as process warnings; Node prints them as
 * "(node:PID) Warning … Use `node --trace-warnings …`", advice meant for Node developers. The CLI prints them as
 * its own one-line warnings instead.
 */
export function printWarningsAsCli(): void {
  process.removeAllListeners('warning');
  process.on('warning', (w: Error) => process.stderr.write(`adainfer: warning: ${w.message}\n`));
}

/**
 * A context longer than the model was trained on is allowed (the positions just go out of distribution, and
 * the text degrades), so it is a warning, not an error.
 */
export function warnIfBeyondTrainedContext(requested: number | undefined, trained: number): void {
  if (requested !== undefined && requested > trained)
    process.stderr.write(
      `adainfer: warning: --ctx ${requested} is more than the ${trained} positions the model was trained on; text past position ${trained} will degrade\n`,
    );
}
