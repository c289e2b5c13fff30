# The AMIs AWS clusters boot: tenantctl-node-<kubernetes version> (activities/aws_resources.py
# ami_name; looked up by name, owner self, in the cluster's region). Same node OS contract as the
# KVM image (images/kvm-node): containerd, /opt/bin/kubelet-v<version>, cloud-init; plus the
# bootstrap agent the instance user data runs:
#   /opt/tenantctl/bin/bootstrap --region R --cloud-config s3://<bucket>/<key> --node-name-tag tenantctl.io/node
# which fetches the role's cloud-config with the instance profile, names the node from its tag, and
# applies it; its tenantctl-certificates.service runs /opt/tenantctl/bin/fetch-certificates before
# the kubelet at every boot (key pairs from Secrets Manager into /etc/kubernetes/ssl/<dir>/).
#
#   packer init images/aws-node && packer build -var kubernetes_version=1.32.4 -var region=eu-central-1 images/aws-node
packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
  }
}

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes version without the v, e.g. 1.32.4 (the AMI is tenantctl-node-<version>)"
}

variable "region" {
  type    = string
  default = "eu-central-1"
}

variable "ami_name_prefix" {
  type        = string
  default     = "tenantctl-node"
  description = "the cluster spec's aws.ami_name_prefix"
}

variable "instance_type" {
  type    = string
  default = "m6i.large"
}

variable "ami_regions" {
  type        = list(string)
  default     = []
  description = "further regions to copy the AMI to (clusters look it up in their own region)"
}

source "amazon-ebs" "node" {
  region        = var.region
  ami_name      = "${var.ami_name_prefix}-${var.kubernetes_version}"
  ami_regions   = var.ami_regions
  instance_type = var.instance_type
  ssh_username  = "ubuntu"
  source_ami_filter {
    filters = {
      name                = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = ["099720109477"] # Canonical
    most_recent = true
  }
  # IMDSv2 only, as the launch templates require (pods cannot reach the node role's credentials).
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  imds_support = "v2.0"
  encrypt_boot = true
  tags = {
    "tenantctl.io/kubernetes-version" = var.kubernetes_version
    "app.kubernetes.io/managed-by"    = "tenantctl"
  }
}

build {
  sources = ["source.amazon-ebs.node"]

  provisioner "file" {
    source      = "${path.root}/files/"
    destination = "/tmp/tenantctl"
  }

  provisioner "shell" {
    environment_vars = ["KUBERNETES_VERSION=${var.kubernetes_version}"]
    execute_command  = "sudo -E sh -eu '{{ .Path }}'"
    script           = "${path.root}/files/provision.sh"
  }
}
