import { checkArgs, formFields, readForm } from '../form';

const schema = {
  type: 'object',
  properties: {
    city: { type: 'string' },
    days: { type: 'integer', default: 1 },
    scale: { type: 'number' },
    metric: { type: 'boolean', default: true },
    tags: { type: 'array', items: { type: 'string' } },
    note: { anyOf: [{ type: 'string' }, { type: 'null' }], default: null }
  },
  required: ['city', 'scale']
};

describe('the call form', () => {
  it('has one field per parameter, JSON for complex types', () => {
    expect(formFields(schema).map(f => [f.name, f.kind, f.required])).toEqual([
      ['city', 'string', true],
      ['days', 'integer', false],
      ['scale', 'number', true],
      ['metric', 'boolean', false],
      ['tags', 'json', false],
      ['note', 'string', false]
    ]);
  });

  it('reads typed values and leaves empty optional fields to their defaults', () => {
    const fields = formFields(schema);
    expect(
      readForm(fields, {
        city: 'Oslo',
        days: '3',
        scale: '1.5',
        metric: true,
        tags: '["a"]'
      })
    ).toEqual({ args: { city: 'Oslo', days: 3, scale: 1.5, tags: ['a'] } });
  });

  it('reports every problem at once', () => {
    const fields = formFields(schema);
    expect(readForm(fields, { days: 'x', tags: '[', metric: true })).toEqual({
      error:
        'missing arguments city, scale; days must be a whole number; tags is not valid JSON'
    });
  });

  it('reports unexpected arguments as well as missing ones', () => {
    expect(checkArgs(schema, { town: 'Oslo', scale: 1 })).toBe(
      'missing argument city; unexpected argument town'
    );
    expect(checkArgs(schema, { city: 'Oslo', scale: 1 })).toBeNull();
    expect(checkArgs(null, { anything: 1 })).toBeNull();
  });
});
