/**
 * Building blocks of the JSON Schemas this project publishes (docs/schemas): each node carries a `description`
 * saying what a valid value is, which lib/schema/validate.ts puts in its messages ("tasks.sst2.n must be a
 * non-negative integer").
 */
export const num = { type: 'number', description: 'a finite number' } as const;
export const int = { type: 'integer', minimum: 0, description: 'a non-negative integer' } as const;
export const share = { type: 'number', minimum: 0, maximum: 1, description: 'a number in [0, 1]' } as const;
export const str = { type: 'string', description: 'a string' } as const;
export const bool = { type: 'boolean', description: 'a boolean' } as const;
export const strings = { type: 'array', items: str, description: 'an array of strings' } as const;
export const nullable = <T extends { type: string; description: string }>(x: T) => ({ ...x, type: [x.type, 'null'], description: `null or ${x.description}` });
/** An object whose listed properties are all required (others allowed unless the caller closes it). */
export const object = (properties: Record<string, object>, description = 'an object') => ({
  type: 'object',
  description,
  required: Object.keys(properties),
  properties,
});
