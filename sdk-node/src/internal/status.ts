// A minimal decoder for the `grpc-status-details-bin` trailer: google.rpc.Status carrying
// google.protobuf.Any details, of which we read ErrorInfo, BadRequest and RetryInfo.
//
// Vendored by hand (a few wire-format fields) instead of generating google/rpc/*.proto, so
// nothing has to be downloaded and `make gen` stays unchanged.
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

export interface RpcStatusDetails {
  code: number;
  message: string;
  reason: string;
  domain: string;
  metadata: Record<string, string>;
  fieldViolations: { field: string; description: string }[];
  /** From google.rpc.RetryInfo, in milliseconds. */
  retryDelayMs?: number;
}

const TYPE_PREFIX = "type.googleapis.com/";
const ERROR_INFO = "google.rpc.ErrorInfo";
const BAD_REQUEST = "google.rpc.BadRequest";
const RETRY_INFO = "google.rpc.RetryInfo";

function fields(bytes: Uint8Array, visit: (field: number, r: BinaryReader, wt: WireType) => boolean): void {
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [field, wireType] = r.tag();
    if (!visit(field, r, wireType)) r.skip(wireType, field);
  }
}

function readErrorInfo(bytes: Uint8Array, out: RpcStatusDetails): void {
  fields(bytes, (field, r, wt) => {
    if (field === 1 && wt === WireType.LengthDelimited) out.reason = r.string();
    else if (field === 2 && wt === WireType.LengthDelimited) out.domain = r.string();
    else if (field === 3 && wt === WireType.LengthDelimited) {
      let key = "";
      let value = "";
      fields(r.bytes(), (f, e, w) => {
        if (f === 1 && w === WireType.LengthDelimited) key = e.string();
        else if (f === 2 && w === WireType.LengthDelimited) value = e.string();
        else return false;
        return true;
      });
      out.metadata[key] = value;
    } else return false;
    return true;
  });
}

function readBadRequest(bytes: Uint8Array, out: RpcStatusDetails): void {
  fields(bytes, (field, r, wt) => {
    if (field !== 1 || wt !== WireType.LengthDelimited) return false;
    const violation = { field: "", description: "" };
    fields(r.bytes(), (f, v, w) => {
      if (f === 1 && w === WireType.LengthDelimited) violation.field = v.string();
      else if (f === 2 && w === WireType.LengthDelimited) violation.description = v.string();
      else return false;
      return true;
    });
    out.fieldViolations.push(violation);
    return true;
  });
}

function readRetryInfo(bytes: Uint8Array, out: RpcStatusDetails): void {
  fields(bytes, (field, r, wt) => {
    if (field !== 1 || wt !== WireType.LengthDelimited) return false;
    let seconds = 0;
    let nanos = 0;
    fields(r.bytes(), (f, d, w) => {
      if (f === 1 && w === WireType.Varint) seconds = Number(d.int64());
      else if (f === 2 && w === WireType.Varint) nanos = d.int32();
      else return false;
      return true;
    });
    out.retryDelayMs = seconds * 1000 + nanos / 1e6;
    return true;
  });
}

/** Decode a serialized google.rpc.Status. Throws on malformed bytes. */
export function decodeStatusDetails(bytes: Uint8Array): RpcStatusDetails {
  const out: RpcStatusDetails = {
    code: 0,
    message: "",
    reason: "",
    domain: "",
    metadata: {},
    fieldViolations: [],
  };
  fields(bytes, (field, r, wt) => {
    if (field === 1 && wt === WireType.Varint) out.code = r.int32();
    else if (field === 2 && wt === WireType.LengthDelimited) out.message = r.string();
    else if (field === 3 && wt === WireType.LengthDelimited) {
      let typeUrl = "";
      let value: Uint8Array = new Uint8Array();
      fields(r.bytes(), (f, a, w) => {
        if (f === 1 && w === WireType.LengthDelimited) typeUrl = a.string();
        else if (f === 2 && w === WireType.LengthDelimited) value = a.bytes();
        else return false;
        return true;
      });
      const type = typeUrl.startsWith(TYPE_PREFIX) ? typeUrl.slice(TYPE_PREFIX.length) : typeUrl;
      if (type === ERROR_INFO) readErrorInfo(value, out);
      else if (type === BAD_REQUEST) readBadRequest(value, out);
      else if (type === RETRY_INFO) readRetryInfo(value, out);
    } else return false;
    return true;
  });
  return out;
}
