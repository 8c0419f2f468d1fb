/**
 * The Tools panel's call form, built from a tool's JSON schema (pydantic's): one field per
 * parameter, typed inputs for strings, numbers and booleans, JSON for anything else.
 * Pure logic; the panel draws the fields.
 */
import { asString, isObject } from './model';

/** How a parameter is typed in. */
export type FieldKind = 'string' | 'integer' | 'number' | 'boolean' | 'json';

/** One parameter of a tool. */
export interface IField {
  name: string;
  kind: FieldKind;
  required: boolean;
  /** The default as JSON text ('' when there is none). */
  defaultText: string;
  description: string;
}

const SIMPLE: FieldKind[] = ['string', 'integer', 'number', 'boolean'];

function kindOf(property: Record<string, unknown>): FieldKind {
  let type = property.type;
  // Optional[X] is anyOf [X, null]: typed in as X, left empty for None.
  if (type === undefined && Array.isArray(property.anyOf)) {
    const types = property.anyOf
      .filter(isObject)
      .map(option => option.type)
      .filter(t => t !== 'null');
    type = types.length === 1 ? types[0] : undefined;
  }
  return SIMPLE.includes(type as FieldKind) ? (type as FieldKind) : 'json';
}

/** The fields of a tool's parameters schema, in the signature's order. */
export function formFields(schema: Record<string, unknown> | null): IField[] {
  const properties = schema ? schema.properties : undefined;
  if (!schema || !isObject(properties)) {
    return [];
  }
  const required = new Set(
    Array.isArray(schema.required) ? schema.required.map(r => asString(r)) : []
  );
  return Object.entries(properties).map(([name, value]) => {
    const property = isObject(value) ? value : {};
    return {
      name,
      kind: kindOf(property),
      required: required.has(name),
      defaultText:
        'default' in property ? (JSON.stringify(property.default) ?? '') : '',
      description: asString(property.description)
    };
  });
}

/** What the user typed: text for most fields, a flag for booleans. */
export type FormValues = Record<string, string | boolean>;

/**
 * The keyword arguments the form describes, or every problem with it at once. An empty
 * optional field is left out (the tool's default applies).
 */
export function readForm(
  fields: IField[],
  values: FormValues
): { args: Record<string, unknown> } | { error: string } {
  const args: Record<string, unknown> = {};
  const missing: string[] = [];
  const problems: string[] = [];
  for (const field of fields) {
    const raw = values[field.name];
    if (field.kind === 'boolean') {
      const checked = raw === true;
      if (field.required || JSON.stringify(checked) !== field.defaultText) {
        args[field.name] = checked;
      }
      continue;
    }
    const text = typeof raw === 'string' ? raw : '';
    if (!text.trim()) {
      if (field.required) {
        missing.push(field.name);
      }
      continue;
    }
    if (field.kind === 'string') {
      args[field.name] = text;
    } else if (field.kind === 'integer') {
      if (/^\s*-?\d+\s*$/.test(text)) {
        args[field.name] = parseInt(text, 10);
      } else {
        problems.push(`${field.name} must be a whole number`);
      }
    } else if (field.kind === 'number') {
      const number = Number(text);
      if (Number.isFinite(number)) {
        args[field.name] = number;
      } else {
        problems.push(`${field.name} must be a number`);
      }
    } else {
      try {
        args[field.name] = JSON.parse(text);
      } catch {
        problems.push(`${field.name} is not valid JSON`);
      }
    }
  }
  if (missing.length) {
    problems.unshift(`missing ${plural('argument', missing)}`);
  }
  return problems.length ? { error: problems.join('; ') } : { args };
}

function plural(word: string, names: string[]): string {
  return `${word}${names.length === 1 ? '' : 's'} ${names.join(', ')}`;
}

/**
 * Missing and unexpected arguments of a call against the schema, in one message (null when
 * there are none). The kernel checks types and values when the tool is called.
 */
export function checkArgs(
  schema: Record<string, unknown> | null,
  args: Record<string, unknown>
): string | null {
  const fields = formFields(schema);
  if (!schema || !isObject(schema.properties)) {
    return null;
  }
  const known = new Set(fields.map(f => f.name));
  const missing = fields
    .filter(f => f.required && !(f.name in args))
    .map(f => f.name);
  const unexpected = Object.keys(args).filter(name => !known.has(name));
  const problems: string[] = [];
  if (missing.length) {
    problems.push(`missing ${plural('argument', missing)}`);
  }
  if (unexpected.length && schema.additionalProperties !== true) {
    problems.push(`unexpected ${plural('argument', unexpected)}`);
  }
  return problems.length ? problems.join('; ') : null;
}
