/** The default prompts of the latency harness and the soak: short TinyStories-style openings (the bundled models' domain). */
export const STORY_PROMPTS: readonly string[] = [
  'Once upon a time',
  'One day, a little girl named Lily',
  'Tom and his dog went to the park.',
  'The sun was shining and the birds were singing.',
  'There was a big red ball in the garden',
  'Mom said, "Time for bed!"',
  'Ben wanted to build a tall tower',
  'A small cat lived in a house near the sea.',
];
