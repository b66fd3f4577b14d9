/** The outcome of one publish. */
export interface PublishResult {
  /** `"redis"` or `"http"`. */
  transport: 'redis' | 'http';
  /**
   * Redis only: how many subscribers received the `PUBLISH` (each Herald node pattern-subscribes
   * once, so this is the number of nodes listening; 0 means none).
   */
  receivers?: number;
  /** HTTP only: Herald's broker was down, so only the connections of the node that answered were reached. */
  localOnly?: boolean;
  /** Herald's explanation when `localOnly` is set. */
  warning?: string;
}
