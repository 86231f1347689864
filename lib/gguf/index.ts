/** GGUF: tensor/value type tables, the header parser with typed metadata getters, and the writer. */
export * from './types';
export * from './reader';
export * from './writer';
