/** Parsers for numeric command-line options, failing with an OptionError that names the flag. */
import { OptionError } from '../errors';

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
