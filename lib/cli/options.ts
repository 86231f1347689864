/** Parsers for numeric command-line options, failing with an OptionError that names the flag. */
import { Command, Option } from 'commander';
import { DEFAULT_MODEL } from '../api';
import { OptionError } from '../errors';
import { BackendChoice, BACKENDS } from '../model/transformer';

export function intOption(flag: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isInteger(n) || n < min || n > max)
      throw new OptionError(flag, `expected an integer in [${min}, ${max}], got '${value}'`);
    return n;
  };
}

export function floatOption(flag: string, min: number, max = Infinity) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max)
      throw new OptionError(flag, `expected a number in [${min}, ${max}], got '${value}'`);
    return n;
  };
}

/** Where the blocks run: `--backend auto|cpu|cuda` and `--device N`, as ModelOptions of loadModel(). */
export interface BackendFlags {
  backend: BackendChoice;
  device?: number;
}

export function addBackendOptions(cmd: Command): Command {
  return cmd
    .option('--backend <b>', "where the blocks run: auto (CUDA when a device is usable), cpu, cuda", backendOption, 'auto')
    .option('--device <n>', 'CUDA device index', intOption('--device', 0, 1024));
}

function backendOption(value: string): BackendChoice {
  if (!(BACKENDS as readonly string[]).includes(value))
    throw new OptionError('--backend', `expected one of ${BACKENDS.join(', ')}, got '${value}'`);
  return value as BackendChoice;
}

/**
 * `-m, --model <path>`, the same in every command: defaults to the bundled model, shown in --help as
 * "(default: the bundled model, <file name>)" once rather than as a long absolute path.
 */
export function modelOption(): Option {
  return new Option('-m, --model <path>', 'GGUF model file or Hugging Face model folder').default(
    DEFAULT_MODEL,
    `the bundled model, ${DEFAULT_MODEL.split(/[\\/]/).pop()}`,
  );
}

/**
 * An old spelling of an option, still accepted so existing scripts keep working, but left out of --help.
 * The command reads `flags[attribute] ?? flags[<new attribute>]`.
 */
export function hiddenAlias(flags: string, parse?: (value: string) => unknown): Option {
  const o = new Option(flags).hideHelp();
  return parse ? o.argParser(parse) : o;
}
