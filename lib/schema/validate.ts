/**
 * JSON Schema validation (ajv) of the files the runtime reads and writes (exit files, results.json), with
 * errors that name the offending field: ajv's instancePath, written as a dotted path (policy.schedule.minLayer,
 * classifier.weights[1]). A schema node may carry a `description` that says what a valid value is ("a number
 * in [0, 1]"); the message then reads "<field> must be <description>".
 */
import Ajv, { ErrorObject, ValidateFunction } from 'ajv';

// strict: a misspelt keyword in a schema fails here; strictRequired off, for if/then's required-when rules.
const ajv = new Ajv({ allErrors: true, verbose: true, discriminator: true, strict: true, strictRequired: false, allowUnionTypes: true });

export type Validator = ValidateFunction;

/** Compiles a schema once (strict mode: a misspelt keyword in a schema is an error here, not a silent pass). */
export function compileSchema(schema: object): Validator {
  return ajv.compile(schema);
}

/** ajv's instancePath ("/policy/classifier/weights/1") as a dotted path under `root` ("policy.classifier.weights[1]"). */
export function fieldPath(instancePath: string, root: string): string {
  if (instancePath === '') return root;
  const parts = instancePath
    .split('/')
    .slice(1)
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  let out = root;
  for (const p of parts) out += /^\d+$/.test(p) ? `[${p}]` : out === '' ? p : `.${p}`;
  return out;
}

/** Short, bounded description of a bad value for error messages. */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (typeof value === 'number') return String(value);
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (value === null) return 'null';
  if (typeof value === 'object') return 'an object';
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? text.slice(0, 40) + '…' : text;
}

type Node = { description?: string; type?: string | string[]; items?: Node; title?: string; properties?: Record<string, Node> };

const EXPECTED_TYPE: Record<string, string> = {
  number: 'a finite number',
  integer: 'an integer',
  string: 'a string',
  boolean: 'a boolean',
  object: 'an object',
  array: 'an array',
  null: 'null',
};

function expectation(node: Node | undefined): string {
  if (!node) return 'present';
  if (node.description) return node.description;
  const t = Array.isArray(node.type) ? node.type : node.type ? [node.type] : [];
  if (t.length === 0) return 'present';
  return t.map((x) => EXPECTED_TYPE[x] ?? x).join(' or ');
}

/**
 * How messages read. `withValue`: append ", got <value>" and report a missing field as "must be …, got
 * undefined" (exit files: the bad value helps), or not ("is missing"; results.json, checked before writing).
 */
export interface MessageStyle {
  root: string;
  withValue: boolean;
  /** Name fields below the top level from their top-level key ("model.name", not "results.model.name"). */
  rootOnlyAtTop?: boolean;
}

/** One ajv error as a sentence naming the field. */
export function formatError(e: ErrorObject, style: MessageStyle): string {
  const depth = e.instancePath === '' ? 0 : e.instancePath.split('/').length - 1;
  const where = fieldPath(e.instancePath, style.rootOnlyAtTop && depth >= 2 ? '' : style.root);
  const parent = e.parentSchema as (Node & { minItems?: number; maxItems?: number }) | undefined;
  const value = e.data;
  const got = (v: unknown) => (style.withValue ? `, got ${describeValue(v)}` : '');
  const child = (key: string) => (where === '' ? key : style.rootOnlyAtTop && depth === 1 ? `${fieldPath(e.instancePath, '')}.${key}` : `${where}.${key}`);
  switch (e.keyword) {
    case 'required': {
      const missing = (e.params as { missingProperty: string }).missingProperty;
      const node = parent?.properties?.[missing];
      return style.withValue && node && node.type !== 'object' ? `${child(missing)} must be ${expectation(node)}, got undefined` : `${child(missing)} is missing`;
    }
    case 'additionalProperties': {
      const extra = (e.params as { additionalProperty: string }).additionalProperty;
      const kind = value && typeof value === 'object' ? (value as { kind?: unknown }).kind : undefined;
      return typeof kind === 'string' && parent?.title
        ? `${child(extra)} is not a field of a "${kind}" ${parent.title}`
        : `${child(extra)} is not a field of ${where || 'the file'}`;
    }
    case 'discriminator': {
      const p = e.params as { tag: string; tagValue: unknown };
      return `${child(p.tag)} must be ${parent?.properties?.[p.tag]?.description ?? 'a known kind'}${got(p.tagValue)}`;
    }
    case 'exclusiveMinimum':
      return parent?.description ? `${where} must be ${parent.description}${got(value)}` : `${where} must be > ${(e.params as { limit: number }).limit}${got(value)}`;
    case 'minimum':
      return parent?.description ? `${where} must be ${parent.description}${got(value)}` : `${where} must be >= ${(e.params as { limit: number }).limit}${got(value)}`;
    case 'minItems':
    case 'maxItems': {
      if (parent?.description) return `${where} must be ${parent.description}`;
      const limit = (e.params as { limit: number }).limit;
      const fixed = parent?.minItems !== undefined && parent.minItems === parent.maxItems;
      const noun = parent?.items?.type === 'array' ? 'rows' : 'entries';
      const bound = fixed ? `${limit}` : e.keyword === 'minItems' ? `at least ${limit}` : `at most ${limit}`;
      return `${where} must have ${bound} ${noun}, got ${Array.isArray(value) ? value.length : describeValue(value)}`;
    }
    case 'uniqueItems': {
      const { j } = e.params as { i: number; j: number };
      const noun = parent?.items?.title ? `${parent.items.title} ` : '';
      return `${where}: ${noun}${describeValue((value as unknown[])[j])} is listed twice`;
    }
    case 'enum':
    case 'const':
    case 'type':
      // an item of a list of names (a schema node with a title): "features: unknown feature "x"; known: …"
      if (e.keyword === 'enum' && parent?.title && /\[\d+\]$/.test(where))
        return `${where.replace(/\[\d+\]$/, '')}: unknown ${parent.title} ${describeValue(value)}; known: ${((e.params as { allowedValues: unknown[] }).allowedValues ?? []).join(', ')}`;
      return `${where} must be ${parent?.description ?? (e.keyword === 'type' ? expectation({ type: (e.params as { type: string }).type }) : `one of ${JSON.stringify((e.params as { allowedValues?: unknown[] }).allowedValues ?? (e.params as { allowedValue?: unknown }).allowedValue)}`)}${got(value)}`;
    default:
      return parent?.description ? `${where} must be ${parent.description}${got(value)}` : `${where} ${e.message ?? 'is invalid'}`;
  }
}

/** Every schema problem of `value`, as sentences naming the fields (empty when valid). */
export function schemaErrors(validate: Validator, value: unknown, style: MessageStyle): string[] {
  if (validate(value)) return [];
  // An if/then/else failure ("must match 'then' schema") always comes with the failing branch's own errors,
  // which name the field: the summary adds nothing.
  return (validate.errors ?? []).filter((e) => e.keyword !== 'if').map((e) => formatError(e, style));
}
