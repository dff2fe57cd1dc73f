variable "name" {
  description = "Name of the queue, its dead-letter queue (with a -dlq suffix) and the EventBridge rule."
  type        = string
  default     = "lockstep-events"
}

variable "operator_role_name" {
  description = "Name of the IAM role Lockstep's stores read the queue as (the store's identity: IRSA, Pod Identity, or a role it assumes). Leave empty to attach the policy yourself (output policy_json)."
  type        = string
  default     = ""
}

variable "max_receive_count" {
  description = "Receives before a message that keeps failing moves to the dead-letter queue."
  type        = number
  default     = 5
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
