/**
 * The shapes of the ids that come from outside (Meta's webhooks and Graph responses, the PBX's Request-URI and
 * headers) and end up in SIP headers, Graph URLs and logs. Anything else is refused where it enters, so that no CR,
 * LF, `;`, `<` or `,` from outside ever reaches a SIP header.
 */

/** PSIDs and page ids: Meta's numeric ids (as strings). */
export const NUMERIC_ID = /^\d{1,32}$/;

/** Meta's call ids: letters, digits and `._~:=+/-` (base64url-like), at most 256 characters. */
export const META_CALL_ID = /^[A-Za-z0-9._~:=+/-]{1,256}$/;

export function isNumericId(value: string): boolean {
  return NUMERIC_ID.test(value);
}

export function isMetaCallId(value: string): boolean {
  return META_CALL_ID.test(value);
}
