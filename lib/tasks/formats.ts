/**
 * The prompt formats of the paper's tasks — written once, here, as one table.
 *
 * A prompt with k demonstrations is
 *
 *     header  +  demo_1 + SEP + … + demo_k + SEP  +  query
 *
 * where the query is the task's template with its {fields} filled in (it ends with the answer cue, e.g.
 * "Sentiment:"), a demonstration is a filled template followed by " " and its label word, and SEP is a
 * blank line. `{options}` expands to one line per choice, "A. <choice>". The model's answer is read at the
 * last position of the query: the label whose (first) token has the highest logit there (see labels.ts for
 * how a label word becomes the token that is scored).
 *
 * The formats follow Zhao et al. 2021 ("Calibrate before use", whose data files SST-2 and AG News come
 * from) and Hendrycks et al. 2021 (MMLU); CommonsenseQA and COPA use the MMLU layout.
 */

export type TaskName = 'sst2' | 'agnews' | 'csqa' | 'mmlu' | 'copa';

export const TASK_NAMES: readonly TaskName[] = ['sst2', 'agnews', 'csqa', 'mmlu', 'copa'];

export interface PromptFormat {
  title: string;
  /** Printed once, before the demonstrations; may use the query's {fields} (MMLU: {subject}). */
  header: string;
  /** One example; ends with the answer cue. */
  template: string;
  /** The label words, in class order (class i is answered by labels[i]). */
  labels: string[];
}

export const SEPARATOR = '\n\n';

const AGNEWS_HEADER = 'Classify the news articles into the categories of World, Sports, Business, and Technology.\n\n';
const MMLU_HEADER = 'The following are multiple choice questions (with answers) about {subject}.\n\n';

// One row per task: header (printed once, before the demonstrations), template (one example, ending with the
// answer cue), labels (class i is answered by labels[i]).
// prettier-ignore
export const PROMPT_FORMATS: Record<TaskName, PromptFormat> = {
  sst2:   { title: 'SST-2',         header: '',            template: 'Review: {sentence}\nSentiment:',           labels: ['negative', 'positive'] },
  agnews: { title: 'AG News',       header: AGNEWS_HEADER, template: 'Article: {article}\nAnswer:',              labels: ['World', 'Sports', 'Business', 'Technology'] },
  csqa:   { title: 'CommonsenseQA', header: '',            template: 'Question: {question}\n{options}\nAnswer:', labels: ['A', 'B', 'C', 'D', 'E'] },
  mmlu:   { title: 'MMLU',          header: MMLU_HEADER,   template: '{question}\n{options}\nAnswer:',           labels: ['A', 'B', 'C', 'D'] },
  copa:   { title: 'COPA',          header: '',            template: '{premise}\n{options}\nAnswer:',            labels: ['A', 'B'] },
};

/** One example of a task, normalised from its file row. */
export interface TaskItem {
  /** Stable identity within the task (file line or id). */
  id: string;
  /** Values of the template's {fields}. */
  fields: Record<string, string>;
  /** Multiple choice: the choices, in label order (labels[i] names options[i]). */
  options?: string[];
  /** Index of the right label. */
  answer: number;
  /** Demonstrations are drawn from the same group (MMLU: the subject). */
  group?: string;
}

/** Fills {name} placeholders; an unknown name is an error (a typo in the table must not pass silently). */
export function fill(template: string, values: Record<string, string>): string {
  return template.replace(/\{(\w+)\}/g, (_, name: string) => {
    const v = values[name];
    if (v === undefined) throw new Error(`prompt template uses {${name}}, which the example does not have`);
    return v;
  });
}

export function renderQuery(format: PromptFormat, item: TaskItem): string {
  const options = item.options ? item.options.map((o, i) => `${format.labels[i]}. ${o}`).join('\n') : '';
  return fill(format.template, { ...item.fields, options });
}

export function renderDemo(format: PromptFormat, item: TaskItem): string {
  return `${renderQuery(format, item)} ${format.labels[item.answer]}`;
}

/** The prompt text for `query` after `demos` (which must not include the query). */
export function buildPrompt(format: PromptFormat, query: TaskItem, demos: TaskItem[]): string {
  const head = fill(format.header, query.fields);
  const shots = demos.map((d) => renderDemo(format, d) + SEPARATOR).join('');
  return head + shots + renderQuery(format, query);
}
