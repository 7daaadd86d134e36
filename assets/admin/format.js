// Dates and durations for people.

const DAY = 86_400;

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "always" });
const absolute = new Intl.DateTimeFormat(undefined, {
  year: "numeric",
  month: "short",
  day: "numeric",
});
const precise = new Intl.DateTimeFormat(undefined, {
  dateStyle: "medium",
  timeStyle: "long",
});

// Months and weeks are left out on purpose: "in 30 days" says more than
// "in 1 month" about a key's validity.
const UNITS = [
  ["year", 365 * DAY],
  ["day", DAY],
  ["hour", 3600],
  ["minute", 60],
];

/** "in 3 days", "2 hours ago": `date` relative to `now`. */
export function relativeTime(date, now = new Date()) {
  const secs = (date.getTime() - now.getTime()) / 1000;
  const size = Math.abs(secs);
  if (size < 45) {
    return secs >= 0 ? "in a few seconds" : "just now";
  }
  for (const [unit, length] of UNITS) {
    // A key made "for 1 day" a few seconds ago expires "in 1 day", not
    // "in 23 hours".
    if (size >= length * 0.95 || unit === "minute") {
      return relative.format(Math.round(secs / length), unit);
    }
  }
  return "";
}

/** "12 Mar 2026": the date alone. */
export const shortDate = (date) => absolute.format(date);

/** Date and time with the zone, for tooltips. */
export const fullDate = (date) => precise.format(date);

/** Seconds in `days` days. */
export const daysToSeconds = (days) => days * DAY;

/** Parses an RFC 3339 time from the API; null when it is not one. */
export function parseTime(text) {
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? null : date;
}
